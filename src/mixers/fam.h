// TransformerFAM (Hwang et al., arXiv 2404.09173): block sliding window attention (BSWA) with a
// feedback attention memory (FAM). MECHANISMS.md section 3. No public code exists; this file
// follows the paper's description step by step.
//
// The input is cut into blocks of Lb tokens. In every layer, for block tau:
//
//   keys  = [ memory: KV of the previous m blocks | FAM: KV of F_{tau-1} | the block's KV ]
//
//     query \ key    memory    FAM    block
//     block tokens   all       all    causal
//     FAM tokens     none      all    all
//
//   block:  A   = Attn   + I          O     = FF(PreLN(A))   + A     (the layer around the mixer)
//   FAM:    A_F = Attn_F + F_{tau-1}  F_tau = FF(PreLN(A_F)) + A_F   (here, with that same layer)
//
// - One attention call for both query sets; FAM goes through the same QKV(PreLN(.)), output
//   projection and feed-forward as the tokens (the layer hands them over: attach_layer).
// - F_0 is a learned [F, D] embedding, shared by the batch, held by layer 0 and passed through
//   the layers like tokens (FAM-to-FAM attention, then the feed-forward): layer l starts from
//   what layer l-1 made of it. The first update after F_0 uses a zero residual instead of F_0.
// - RoPE: block tokens at their positions; F_{tau-1} at the positions of the last F tokens of
//   block tau-1 (F_0 at the F positions before the first block); the FAM queries of block tau,
//   which become F_tau, at the last F positions of block tau.
// - Training only: a random position offset per example (U(0, 2 pi 10000) * round(U(0, 1)),
//   rounded to an integer, the same in every layer) and random state passing (with
//   probability p a sequence starts from the FAM the previous training call ended with, the
//   first example's, shared by the batch; otherwise from F_0).
// - F = 0 is BSWA: the same code with no FAM rows.
//
// State per layer: the last m complete blocks' KV, the current partial block's KV, F_{tau-1}
// [B, F, D] and the offset: constant in the number of tokens seen. Under autograd gradients flow
// through the cached blocks and through every FAM update of a call.
#pragma once

#include "io/json_fields.h"
#include "mixers/mechanism.h"
#include "mixers/mixer.h"
#include "nn/linear.h"
#include "nn/rope.h"

namespace longctx {

struct FamOptions {
  int64_t d_model = 256, n_heads = 4;
  int64_t block = 1024;          // Lb
  int64_t memory_blocks = 3;     // m: cached previous blocks (0: the block alone)
  int64_t fam_tokens = 64;       // F (0: BSWA)
  double state_passing = 0.8;    // training: probability of starting from the previous call's FAM
  bool position_offset = true;   // training: random RoPE offset per example
  uint64_t seed = 0;             // for the state-passing draws
  RopeOptions rope;
  // type "bswa": block, memory_blocks; type "fam": also fam_tokens, state_passing, position_offset.
  static FamOptions parse(Fields& f, int64_t d_model, int64_t n_heads, const RopeOptions& rope, bool fam);
};

struct FamMask;

class FamMixer : public Mixer {
 public:
  explicit FamMixer(FamOptions o);
  torch::Tensor forward(const torch::Tensor& x, State& state, StepContext& ctx) override;
  std::string kind() const override { return o_.fam_tokens > 0 ? "fam" : "bswa"; }
  bool state_bounded() const override { return true; }
  StateSchema state_schema() const override;
  void attach_layer(LayerFns fns) override { layer_ = std::move(fns); }
  std::map<std::string, std::vector<double>> diagnostics(const State& run_memory) const override;
  const FamOptions& options() const { return o_; }
  // Layer 0 holds the learned initial FAM (`fam_init`, [F, D]); the factory calls this once.
  void hold_first_layer_parameters(double init_std) override;

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  torch::Tensor fam_init;  // [F, D] on layer 0 only

 private:
  // Rows x [B, n, D] (already normalised) through the projections: q|k before RoPE
  // [B, n, 2H, d] and v [B, n, H, d].
  std::pair<torch::Tensor, torch::Tensor> project(const torch::Tensor& x) const;
  // RoPE on y [B, n, heads, d] at `pos` [n], plus the per-example offset [B] when defined.
  torch::Tensor rotate(const torch::Tensor& y, const torch::Tensor& pos, const torch::Tensor& offset) const;
  // q, k, v [B, H, n, d] of rows x, q and k rotated at `pos` (+ offset).
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> qkv(const torch::Tensor& x, const torch::Tensor& pos,
                                                              const torch::Tensor& offset) const;
  // softmax(q k^T / sqrt(d), masked as `mask` says) v -> o_proj, as [B, nq, D] (the fused kernel).
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       const FamMask& mask) const;
  // The initial FAM of the next layer: F_0 of this layer through it as a block of F tokens.
  torch::Tensor through_layer(const torch::Tensor& f0) const;

  FamOptions o_;
  Rope rope_;
  int64_t dh_;
  LayerFns layer_;
  // Nothing that changes while reading lives here. The run memory (StepContext::run_memory) holds
  // the training draws' counters, "passed" (the first example's FAM at the end of the last
  // training call, [1, F, D]) and "state_passed" (1 when the last training call started from it).
};

// The attention mask of one call. Keys are laid out [memory (n_mem) | FAM (n_fam) | block].
// Block queries are block tokens fill .. fill+n_queries-1 and the block keys are tokens
// 0 .. fill+n_queries-1 (causal); FAM queries (fam_queries) see the FAM and the block's `fill`
// tokens (all of them: the block is complete), never the memory.
// As the attention kernel's position rule (nn/attention.h): key j sits at position j; a block
// query at n_mem + n_fam + its block offset, window 0; a FAM query at the last key's position
// with a window that ends just after the memory.
struct FamMask {
  torch::Tensor q_pos;  // [n_queries]
  int64_t n_keys = 0, window = 0;
};
FamMask fam_mask(int64_t n_mem, int64_t n_fam, int64_t fill, int64_t n_queries, bool fam_queries);
// The same mask as a table [queries, keys] (true = visible).
torch::Tensor fam_visibility(int64_t n_mem, int64_t n_fam, int64_t fill, int64_t n_queries, bool fam_queries);

// bswa (fam = false: block sliding-window attention, FAM's baseline) and fam, for the
// factory's registry.
Mechanism fam_mechanism(bool fam);

}  // namespace longctx
