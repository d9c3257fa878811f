#include "nn/rope.h"

#include "util/error.h"

namespace longctx {

Rope::Rope(RopeOptions o) : o_(o) {
  LCX_CHECK(o_.dim > 0 && o_.dim % 2 == 0, "rope: dim ", o_.dim, " must be positive and even");
  LCX_CHECK(o_.base > 1.0, "rope: base ", o_.base, " must be > 1");
  auto i = torch::arange(0, o_.dim / 2, torch::kFloat64);
  inv_freq_ = torch::pow(o_.base, -2.0 * i / double(o_.dim));
}

void Rope::set_scaling(const torch::Tensor& factors, double attention_scale) {
  LCX_CHECK(factors.numel() == o_.dim / 2, "rope: ", factors.numel(), " scaling factors for ", o_.dim / 2,
            " frequencies");
  auto i = torch::arange(0, o_.dim / 2, torch::kFloat64);
  inv_freq_ = torch::pow(o_.base, -2.0 * i / double(o_.dim)) / factors.to(torch::kFloat64);
  attn_scale_ = attention_scale;
}

torch::Tensor Rope::angles(const torch::Tensor& pos) const {
  return pos.to(torch::kFloat64).unsqueeze(-1) * inv_freq_.unsqueeze(0);
}

torch::Tensor Rope::apply(const torch::Tensor& x, const torch::Tensor& pos) const {
  int64_t T = x.size(-2), d = x.size(-1);
  LCX_CHECK(d == o_.dim, "rope: input has ", d, " channels, rope dim is ", o_.dim);
  LCX_CHECK(pos.numel() == T, "rope: ", pos.numel(), " positions for ", T, " tokens");
  auto ang = angles(pos);
  auto cos = (torch::cos(ang) * attn_scale_).to(x.scalar_type());
  auto sin = (torch::sin(ang) * attn_scale_).to(x.scalar_type());
  if (!o_.interleaved) {
    auto x1 = x.narrow(-1, 0, d / 2), x2 = x.narrow(-1, d / 2, d / 2);
    return torch::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
  }
  auto xv = x.unflatten(-1, {d / 2, 2});
  auto x1 = xv.select(-1, 0), x2 = xv.select(-1, 1);
  return torch::stack({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1).flatten(-2);
}

}  // namespace longctx
