// Activation Beacon (Zhang et al., arXiv 2401.03462): a trained full-attention model reads past
// its context by condensing each window of l tokens into k = l / alpha beacon activations.
// MECHANISMS.md section 7. This is the base model's attention with beacon rows added, so a
// checkpoint of the base loads as it is (q_proj..o_proj keep their names) and, with
// `"beacons": false`, the mixer is exactly the base's full attention.
//
// Per layer, for window j of l raw tokens x_1..x_l with m beacon keys/values in memory:
//
//   raw x_t      W_Q/K/V/O of the base    sees memory, x_1..x_t          position m + t - 1
//   beacon b_i   Wb_Q/K/V/O (own)         sees memory, its raw span,     position m + i*alpha
//                                          and itself
//        stepwise expansion (default):  x_1 .. x_{i alpha}
//        segmentation:                  x_{(i-1) alpha + 1} .. x_{i alpha}
//        full coverage:                 x_1 .. x_l
//
//   beacon rows:  A = Attn_b + h_b;  h_b' = FF(PreLN(A)) + A    (the layer's own norm and MLP)
//   after the window: memory ++= the beacons' K/V (at memory slots m .. m+k-1); the window's raw
//   K/V are dropped.
//
// - The beacon stream starts at layer 0 from one learned embedding (held by layer 0, repeated k
//   times) and goes up through the layers like tokens; the raw tokens of later windows see
//   earlier windows only through the beacons.
// - Positions are renumbered every window: memory slot s sits at position s, raw token t at
//   m + t - 1, so relative distances stay below m + l + k (the model's trained range when the
//   ratio is chosen so that it fits). A memory slot's position never changes once written and a
//   window's raw tokens all share one m, so keys are cached already rotated at the position
//   they keep; beacon keys are rotated twice (at m + i*alpha inside their window, at their slot
//   in memory) from the one projection.
// - The ratio: in training one drawn per sequence from `ratios` (the same in every layer); at
//   inference `ratio`, or with ratio 0 the smallest ratio of `ratios` whose reach
//   (max_positions - l) * alpha + l covers the expected length (the largest when the length is
//   unknown or none covers it). A stream keeps the ratio it started with (in its state).
//
// State per layer: the beacons' K/V (floor(tokens / l) * k entries) and one window of raw K/V:
// it grows as tokens / alpha. Under autograd gradients flow through the memory into earlier
// windows.
#pragma once

#include "mixers/attention.h"

namespace longctx {

struct BeaconOptions {
  int64_t window = 256;                        // l: raw tokens per window (the stride)
  std::vector<int64_t> ratios{2, 4, 8, 16, 32};  // training draws; candidates of the auto choice
  int64_t ratio = 0;                           // inference: 0 = auto
  int64_t max_positions = 0;                   // L_max of the base model (for the auto choice)
  std::string attend = "step";                 // step | segment | full: which raw tokens a beacon sees
  bool beacons = true;                         // false: the base model's attention exactly
  uint64_t seed = 0;                           // for the training draws of the ratio
  static BeaconOptions parse(Fields& f, int64_t max_position_embeddings);
  // Tokens reachable at ratio alpha within max_positions: (max_positions - l) * alpha + l.
  int64_t reach(int64_t alpha) const;
  // The inference ratio for a stream of `expected` tokens (0 = unknown).
  int64_t choose(int64_t expected) const;
};

class BeaconMixer : public AttentionMixer {
 public:
  BeaconMixer(AttentionMixerOptions a, BeaconOptions b);
  torch::Tensor forward(const torch::Tensor& x, State& state, StepContext& ctx) override;
  std::string kind() const override { return b_.beacons ? "activation_beacon" : AttentionMixer::kind(); }
  bool state_bounded() const override { return false; }
  void attach_layer(LayerFns fns) override { layer_ = std::move(fns); }
  std::map<std::string, std::vector<double>> diagnostics(const State& run_memory) const override;
  StateSchema state_schema() const override;
  const BeaconOptions& beacon_options() const { return b_; }
  // Layer 0 holds the learned beacon embedding [D]; the factory calls this once.
  void hold_first_layer_parameters(double init_std) override;

  // The beacons' own projections (initialised from the base's: train.init_copy).
  Linear beacon_q_proj{nullptr}, beacon_k_proj{nullptr}, beacon_v_proj{nullptr}, beacon_o_proj{nullptr};
  torch::Tensor beacon_embed;  // [D] on layer 0 only

 private:
  // Condenses the window just completed: beacon rows h [B, k, D] of this layer, the window's
  // raw keys/values (rotated) [B, H, l, dh], m memory entries. Returns the rows for the next
  // layer and appends the beacons' K/V to the memory.
  torch::Tensor condense(const torch::Tensor& h, const torch::Tensor& raw_k, const torch::Tensor& raw_v,
                         int64_t alpha, State& state);

  int64_t kvh() const { return o_.n_kv_heads ? o_.n_kv_heads : o_.n_heads; }  // key/value heads (GQA)

  BeaconOptions b_;
  LayerFns layer_;
  // The training draws' counter and the last ratio ("ratio", diagnostics) live in the run
  // memory (StepContext::run_memory), not here.
};

// Which keys the k = l / alpha beacon queries of a window see, as a table [k, m + l + k]
// (true = visible): keys laid out [memory (m) | raw window (l) | beacons (k)].
torch::Tensor beacon_visibility(int64_t m, int64_t l, int64_t alpha, const std::string& attend);

// activation_beacon, for the factory's registry.
Mechanism beacon_mechanism();

}  // namespace longctx
