// Infini-attention (Munkhdalai et al., arXiv 2404.07143): local causal softmax attention within
// segments of N tokens plus a compressive memory per head, read and written once per segment.
//
//   sigma(x) = ELU(x) + 1 on the pre-RoPE queries and keys
//   A_mem = sigma(Q) M_{s-1} / (sigma(Q) z_{s-1})            retrieve with the previous state,
//   linear: M_s = M_{s-1} + sigma(K)^T V                      then update
//   delta:  M_s = M_{s-1} + sigma(K)^T (V - sigma(K) M_{s-1} / (sigma(K) z_{s-1}))
//   z_s = z_{s-1} + sum_t sigma(K_t)
//   A = sigmoid(beta_h) A_mem + (1 - sigmoid(beta_h)) A_dot,  beta: one learned scalar per head
//
// "deltanet" replaces the memory by DeltaNet's (Yang et al. 2024; ../shared/RETRIEVAL.md section 2):
//   phi(x) = SiLU(x) / ||SiLU(x)||_2 on the pre-RoPE queries and keys (unit norm, per head)
//   b_t = sigmoid(x_t W_b + c) per head and token (the write strength, in (0, 1))
//   A_mem = phi(Q) M_{s-1}                                    no normaliser, no z
//   M_t = M_{t-1} + b_t phi(k_t) (v_t - phi(k_t)^T M_{t-1})   token by token over the segment,
// computed per chunk of C tokens exactly with the UT/WY form (one unit-triangular solve per chunk):
//   [W | U] = (I + strictLower(diag(b) K K^T))^-1 diag(b) [K | V],  M <- M + K^T (U - W M).
// With ||k|| = 1 and b < 1 each step is a contraction on M, and a direction orthogonal to every
// later key is never overwritten: a key written once survives any amount of filler written in
// other directions. The state is M alone (plus the partial segment's k, v, phi(k), b).
// "read": "token" reads DeltaNet's causal output instead (each token after its own write).
//
// M and z are kept in float32 (float64 when the compute dtype is float64). Before the first
// segment completes, M = z = 0 and the ratio 0/0 reads as 0 (denominator clamped at eps).
// The state is M [B,H,dk,dv], z [B,H,dk] and the current partial segment's keys and values:
// post-RoPE keys for local attention, sigma(K) for the memory update when the segment completes.
// Under autograd the graph runs through M and z across every segment of a call (BPTT);
// `detach_every` = k cuts it after every k-th memory update.
#pragma once
#include "io/json_fields.h"
#include "mixers/mechanism.h"
#include "mixers/mixer.h"
#include "nn/linear.h"
#include "nn/rope.h"

namespace longctx {

struct InfiniAttentionOptions {
  int64_t d_model = 256, n_heads = 4;
  int64_t segment = 2048;     // N: tokens per segment
  enum class Update { linear, delta, deltanet };
  Update update = Update::delta;  // "delta" (the paper's), "linear", "deltanet" (no normaliser)
  int64_t chunk = 64;         // deltanet: tokens per UT/WY chunk of the memory update
  // deltanet: when tokens read the memory. "segment" (Infini-attention's way): as it stood before
  // the current segment, written when a segment completes. "token" (DeltaNet's causal output):
  // each token reads it after its own write, o_t = phi(q_t)^T M_t, so a key one token back is in
  // memory too; M is written as tokens arrive.
  bool token_read = false;
  // The local softmax path. "segment" (Infini-attention's): causal within segments of N tokens.
  // "window" (needs deltanet and read "token"): every token sees the last N tokens, so a
  // segment edge never cuts the question from its answer; the memory holds everything.
  bool window_local = false;
  // deltanet: K > 0 passes the memory's queries and keys (before the feature map) through a causal
  // depthwise convolution over the last K tokens, DeltaNet's short convolution, so a key can hold
  // the tokens before it ("pass key is 7" and "grass is green" write apart). Initialised to the
  // identity (the last tap 1), so a model that gains it starts as the same function. The state
  // holds the last K - 1 rows of its input. 0 = off.
  int64_t qk_conv = 0;
  // deltanet: a learned decay (Gated DeltaNet, Yang, Kautz, Hatamizadeh 2025): per head and token
  // alpha_t = exp(-exp(x_t W_a + c)) in (0, 1], and M_t = alpha_t (I - b_t k_t k_t^T) M_{t-1} +
  // b_t k_t v_t^T, so a memory fed stationary text settles within about 1 / (1 - alpha) tokens.
  // W_a starts at 0 and c at log(decay_init): every head starts forgetting decay_init per token.
  bool decay = false;
  double decay_init = 1e-5;
  int64_t detach_every = 0;   // training: detach M, z after every k-th update (0 = never)
  double gate_init = 0.0;     // beta at initialisation (sigmoid 0.5)
  double eps = 1e-6;          // denominator guard
  bool read_memory = true;    // false: an ablation for evaluation; A_mem reads 0 (memory still updated)
  RopeOptions rope;
  static InfiniAttentionOptions parse(Fields& f, int64_t d_model, int64_t n_heads, const RopeOptions& rope);
};

class InfiniAttentionMixer : public Mixer {
 public:
  explicit InfiniAttentionMixer(InfiniAttentionOptions o);
  torch::Tensor forward(const torch::Tensor& x, State& state, StepContext& ctx) override;
  std::string kind() const override { return "infini_attention"; }
  bool state_bounded() const override { return true; }
  std::map<std::string, std::vector<double>> diagnostics(const State& run_memory) const override;
  StateSchema state_schema() const override;
  void init_own_parameters() override;
  const InfiniAttentionOptions& options() const { return o_; }

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  torch::Tensor memory_gate;  // beta [H]
  Linear beta_proj{nullptr};  // deltanet only: D -> H write strengths (with bias)
  torch::Tensor qk_conv;  // qk_conv > 0 only: [2 D, K] taps, q's channels then k's, the last tap current
  Linear decay_proj{nullptr};  // decay only: D -> H, log(-log alpha) per head and token

 private:
  InfiniAttentionOptions o_;
  Rope rope_;
  int64_t dh_;
};

// The memory alone, exposed for tests and tools: one segment's retrieval and update.
// sq, sk: sigma features [B,H,T,dk]; v [B,H,T,dv]; M [B,H,dk,dv]; z [B,H,dk] (memory dtype).
torch::Tensor infini_memory_read(const torch::Tensor& sq, const torch::Tensor& M, const torch::Tensor& z, double eps);
void infini_memory_update(torch::Tensor& M, torch::Tensor& z, const torch::Tensor& sk, const torch::Tensor& v,
                          bool delta, double eps);
// DeltaNet's exact update over T tokens in chunks of `chunk`: k [B,H,T,dk] (unit rows), v [B,H,T,dv],
// beta [B,H,T] in (0, 1), M [B,H,dk,dv]; returns the new M (differentiable). `log_alpha` [B,H,T]
// (<= 0), when defined, is Gated DeltaNet's decay: M_t = alpha_t (I - b_t k_t k_t^T) M_{t-1} + b_t k_t v_t^T.
torch::Tensor deltanet_memory_update(const torch::Tensor& M, const torch::Tensor& k, const torch::Tensor& v,
                                     const torch::Tensor& beta, int64_t chunk, const torch::Tensor& log_alpha = {});
// DeltaNet's causal outputs and update: o_t = q_t^T M_t with M_t after token t's write, per chunk
// (O = Q M + tril(Q K^T) (U - W M); with a decay, each term scaled by the decay between its
// positions). q [B,H,T,dk]; returns {O [B,H,T,dv], the new M}.
std::pair<torch::Tensor, torch::Tensor> deltanet_scan(const torch::Tensor& M, const torch::Tensor& q,
                                                      const torch::Tensor& k, const torch::Tensor& v,
                                                      const torch::Tensor& beta, int64_t chunk,
                                                      const torch::Tensor& log_alpha = {});
// A causal depthwise convolution: y_t = sum_j w[:, j] x_{t-K+1+j} over x [B,T,C] preceded by the
// K - 1 rows `hist` [B,K-1,C] (the earlier input; zeros at a stream's start); w [C,K]. Returns y and
// the last K - 1 rows of [hist; x], the next call's hist.
std::pair<torch::Tensor, torch::Tensor> causal_short_conv(const torch::Tensor& x, const torch::Tensor& hist,
                                                          const torch::Tensor& w);
// phi: SiLU then L2 normalisation over the last dimension (the DeltaNet feature map).
torch::Tensor deltanet_feature(const torch::Tensor& x);

// infini_attention, for the factory's registry.
Mechanism infini_mechanism();

}  // namespace longctx
