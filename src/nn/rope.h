// Rotary position embedding with explicit positions, so a cache can continue them.
// frequency_i = 1 / (base^(2i/d) * factor_i), i = 0..d/2-1: every scaling of the RoPE family
// (PI, NTK, YaRN, LongRoPE) is a per-frequency factor and an attention scale on cos/sin.
#pragma once
#include <torch/torch.h>

namespace longctx {

struct RopeOptions {
  int64_t dim = 64;          // rotated channels per head (even)
  double base = 10000.0;
  bool interleaved = false;  // false: rotate halves (Llama/HF); true: adjacent pairs (MEGALODON)
};

class Rope {
 public:
  explicit Rope(RopeOptions o = {});
  // x: [..., T, dim] with T at `time_dim` (default -2: [B, H, T, dim]); pos: [T] int64 absolute
  // positions.
  torch::Tensor apply(const torch::Tensor& x, const torch::Tensor& pos, int64_t time_dim = -2) const;
  // Angles in float64: pos * frequency, [T, dim/2]. Float32 would lose the phase past ~1e5.
  torch::Tensor angles(const torch::Tensor& pos) const;
  const RopeOptions& options() const { return o_; }
  torch::Tensor inv_freq() const { return inv_freq_; }  // float64 [dim/2]
  // Divides frequency i by factors[i] and multiplies cos and sin by attention_scale; positions
  // below n_hat keep the unscaled frequencies (LongRoPE's n-hat).
  void set_scaling(const torch::Tensor& factors, double attention_scale, int64_t n_hat = 0);
  double attention_scale() const { return attn_scale_; }
  // Rotates x by explicit angles [T, dim/2] (float64) with cos and sin multiplied by `scale`.
  torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& ang, double scale, int64_t time_dim = -2) const;

 private:
  RopeOptions o_;
  torch::Tensor inv_freq_, inv_freq_plain_;
  double attn_scale_ = 1.0;
  int64_t n_hat_ = 0;
};

}  // namespace longctx
