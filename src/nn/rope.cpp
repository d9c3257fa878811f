#include "nn/rope.h"

#include <ATen/Dispatch.h>

#include <cmath>

#include "nn/fused.h"
#include "util/error.h"

namespace longctx {

Rope::Rope(RopeOptions o) : o_(o) {
  LCX_CHECK(o_.dim > 0 && o_.dim % 2 == 0, "rope: dim ", o_.dim, " must be positive and even");
  LCX_CHECK(o_.base > 1.0, "rope: base ", o_.base, " must be > 1");
  auto i = torch::arange(0, o_.dim / 2, torch::kFloat64);
  inv_freq_ = torch::pow(o_.base, -2.0 * i / double(o_.dim));
  inv_freq_plain_ = inv_freq_;
}

void Rope::set_scaling(const torch::Tensor& factors, double attention_scale, int64_t n_hat) {
  LCX_CHECK(factors.numel() == o_.dim / 2, "rope: ", factors.numel(), " scaling factors for ", o_.dim / 2,
            " frequencies");
  LCX_CHECK(n_hat >= 0, "rope: n_hat ", n_hat, " must be >= 0");
  inv_freq_ = (inv_freq_plain_ / factors.to(torch::kFloat64)).contiguous();
  attn_scale_ = attention_scale;
  n_hat_ = n_hat;
}

torch::Tensor Rope::angles(const torch::Tensor& pos) const {
  auto p = pos.to(torch::kFloat64).unsqueeze(-1);
  auto a = p * inv_freq_.unsqueeze(0);
  if (n_hat_ > 0) a = torch::where(p < double(n_hat_), p * inv_freq_plain_.unsqueeze(0), a);
  return a;
}

torch::Tensor Rope::apply(const torch::Tensor& x, const torch::Tensor& pos, int64_t time_dim) const {
  int64_t td = time_dim < 0 ? x.dim() + time_dim : time_dim;
  LCX_CHECK(pos.numel() == x.size(td), "rope: ", pos.numel(), " positions for ", x.size(td), " tokens");
  // A few positions on the CPU without autograd (decoding, small chunks): cos and sin straight
  // from the positions, in double as angles() computes them, and the fused kernel's rotation on
  // raw rows, instead of a dozen tensor ops and conversions per call.
  constexpr int64_t kFewPositions = 16;
  const bool grad = torch::GradMode::is_enabled() && x.requires_grad();
  if (!grad && x.dim() == 4 && td == 1 && x.device().is_cpu() && pos.device().is_cpu() &&
      pos.scalar_type() == torch::kInt64 && pos.numel() <= kFewPositions &&
      (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble) && o_.dim == x.size(-1)) {
    const int64_t B = x.size(0), T = x.size(1), H = x.size(2), d = o_.dim, h = d / 2;
    auto p = pos.contiguous();
    const int64_t* pp = p.data_ptr<int64_t>();
    const double* fp = inv_freq_.data_ptr<double>();  // both made contiguous by the constructor / set_scaling
    const double* fp0 = inv_freq_plain_.data_ptr<double>();
    constexpr int64_t kMaxHalf = 128;  // head dims up to 256 (at most 32 KiB of cos / sin on the stack)
    if (h <= kMaxHalf) {
      auto xc = x.contiguous();
      auto y = torch::empty_like(xc);
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rope_few", [&] {
        // cos for every (t, i), then sin: in double, then in x's dtype, as the tensor path rounds them.
        scalar_t cs[2 * kFewPositions * kMaxHalf];
        for (int64_t t = 0; t < T; ++t) {
          const double pt = double(pp[t]);
          const double* fr = (n_hat_ > 0 && pt < double(n_hat_)) ? fp0 : fp;
          for (int64_t i = 0; i < h; ++i) {
            const double a = pt * fr[i];
            cs[t * h + i] = static_cast<scalar_t>(std::cos(a) * attn_scale_);
            cs[T * h + t * h + i] = static_cast<scalar_t>(std::sin(a) * attn_scale_);
          }
        }
        rope_rows(xc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), cs, cs + T * h, B, T, H, d, o_.interleaved);
      });
      return y;
    }
  }
  return rotate(x, angles(pos), attn_scale_, time_dim);
}

torch::Tensor Rope::rotate(const torch::Tensor& x, const torch::Tensor& ang, double scale, int64_t time_dim) const {
  int64_t td = time_dim < 0 ? x.dim() + time_dim : time_dim;
  int64_t T = x.size(td), d = x.size(-1);
  LCX_CHECK(d == o_.dim, "rope: input has ", d, " channels, rope dim is ", o_.dim);
  LCX_CHECK(ang.size(0) == T, "rope: ", ang.size(0), " angle rows for ", T, " tokens");
  if (x.dim() == 4 && td == 1)  // [B, T, H, d]: the fused kernel (one pass forward and backward)
    return fused_rope(x, torch::cos(ang) * scale, torch::sin(ang) * scale, o_.interleaved);
  // cos/sin over all d channels, shaped to broadcast against x along its time dimension.
  auto full = o_.interleaved ? ang.repeat_interleave(2, -1) : torch::cat({ang, ang}, -1);  // [T, d]
  std::vector<int64_t> shape(x.dim(), 1);
  shape[td] = T;
  shape.back() = d;
  auto cos = (torch::cos(full) * scale).to(x.device(), x.scalar_type()).view(shape);
  auto sin = (torch::sin(full) * scale).to(x.device(), x.scalar_type()).view(shape);
  torch::Tensor rot;  // the partner channel with its sign: (-x2, x1)
  if (!o_.interleaved) {
    rot = torch::cat({-x.narrow(-1, d / 2, d / 2), x.narrow(-1, 0, d / 2)}, -1);
  } else {
    auto xv = x.unflatten(-1, {d / 2, 2});
    rot = torch::stack({-xv.select(-1, 1), xv.select(-1, 0)}, -1).flatten(-2);
  }
  return x * cos + rot * sin;
}

}  // namespace longctx
