// The fused kernels against their composite references: values in float32 and float64,
// gradients against autograd through the reference and against finite differences.
#include "nn/fused.h"
#include "nn/rope.h"
#include "test_util.h"

using namespace longctx;
using namespace longctx::testing;

namespace {
// Gradients of sum(f(inputs) * w) for every input that requires grad.
std::vector<torch::Tensor> grads(const std::function<torch::Tensor()>& f, std::vector<torch::Tensor> in,
                                 const torch::Tensor& w) {
  for (auto& t : in)
    if (t.grad().defined()) t.mutable_grad() = torch::Tensor();
  (f() * w).sum().backward();
  std::vector<torch::Tensor> g;
  for (auto& t : in) g.push_back(t.grad().clone());
  return g;
}
void finite_differences(const std::function<torch::Tensor()>& f, torch::Tensor& x, const torch::Tensor& w,
                        const torch::Tensor& g) {
  auto flat = x.data().view({-1});
  for (int64_t i = 0; i < flat.numel(); i += std::max<int64_t>(1, flat.numel() / 40)) {
    double old = flat[i].item<double>(), h = 1e-6;
    flat[i] = old + h;
    double fp = (f() * w).sum().item<double>();
    flat[i] = old - h;
    double fm = (f() * w).sum().item<double>();
    flat[i] = old;
    EXPECT_NEAR(g.view({-1})[i].item<double>(), (fp - fm) / (2 * h), 1e-6) << "element " << i;
  }
}
}  // namespace

TEST(Fused, RMSNormMatchesReferenceValuesAndGradients) {
  torch::manual_seed(1);
  for (auto dt : {torch::kFloat32, torch::kFloat64}) {
    auto x = torch::randn({3, 5, 24}, dt).requires_grad_(), w = (torch::randn({24}, dt) + 1).requires_grad_();
    EXPECT_LT(max_abs_diff(fused_rms_norm(x, w, 1e-5), rms_norm_reference(x, w, 1e-5)), dt == torch::kFloat32 ? 1e-5 : 1e-12);
    auto gw = torch::randn({3, 5, 24}, dt);
    auto a = grads([&] { return fused_rms_norm(x, w, 1e-5); }, {x, w}, gw);
    auto b = grads([&] { return rms_norm_reference(x, w, 1e-5); }, {x, w}, gw);
    for (int i = 0; i < 2; ++i) EXPECT_LT(max_abs_diff(a[i], b[i]), dt == torch::kFloat32 ? 1e-4 : 1e-10);
    if (dt == torch::kFloat64) {
      finite_differences([&] { return fused_rms_norm(x, w, 1e-5); }, x, gw, a[0]);
      finite_differences([&] { return fused_rms_norm(x, w, 1e-5); }, w, gw, a[1]);
    }
  }
}

TEST(Fused, SwiGLUMatchesReferenceValuesAndGradients) {
  torch::manual_seed(2);
  for (auto dt : {torch::kFloat32, torch::kFloat64}) {
    auto gu = (torch::randn({4, 3, 20}, dt) * 3).requires_grad_();
    EXPECT_LT(max_abs_diff(fused_swiglu(gu), swiglu_reference(gu)), dt == torch::kFloat32 ? 1e-5 : 1e-12);
    auto w = torch::randn({4, 3, 10}, dt);
    auto a = grads([&] { return fused_swiglu(gu); }, {gu}, w);
    auto b = grads([&] { return swiglu_reference(gu); }, {gu}, w);
    EXPECT_LT(max_abs_diff(a[0], b[0]), dt == torch::kFloat32 ? 1e-4 : 1e-10);
    if (dt == torch::kFloat64) finite_differences([&] { return fused_swiglu(gu); }, gu, w, a[0]);
  }
}

TEST(Fused, RopeMatchesReferenceValuesAndGradientsInBothLayouts) {
  torch::manual_seed(3);
  for (bool inter : {false, true})
    for (auto dt : {torch::kFloat32, torch::kFloat64}) {
      auto x = torch::randn({2, 7, 3, 8}, dt).requires_grad_();
      auto ang = torch::rand({7, 4}, torch::kFloat64) * 100;
      auto c = torch::cos(ang) * 1.3, s = torch::sin(ang) * 1.3;  // with an attention scale
      EXPECT_LT(max_abs_diff(fused_rope(x, c, s, inter), rope_reference(x, c, s, inter)), dt == torch::kFloat32 ? 1e-5 : 1e-12);
      auto w = torch::randn({2, 7, 3, 8}, dt);
      auto a = grads([&] { return fused_rope(x, c, s, inter); }, {x}, w);
      auto b = grads([&] { return rope_reference(x, c, s, inter); }, {x}, w);
      EXPECT_LT(max_abs_diff(a[0], b[0]), dt == torch::kFloat32 ? 1e-5 : 1e-10);
      if (dt == torch::kFloat64) finite_differences([&] { return fused_rope(x, c, s, inter); }, x, w, a[0]);
    }
}

TEST(Fused, RopeFusedPathEqualsGeneralPathOfRopeClass) {
  for (bool inter : {false, true}) {
    RopeOptions o;
    o.dim = 16;
    o.interleaved = inter;
    Rope r(o);
    auto x = torch::randn({2, 9, 3, 16});                       // [B, T, H, d]: fused
    auto pos = torch::arange(1000, 1009, torch::kInt64);
    auto fused = r.apply(x, pos, 1);
    auto general = r.apply(x.transpose(1, 2), pos).transpose(1, 2);  // [B, H, T, d]: composite
    EXPECT_LT(max_abs_diff(fused, general), 1e-5);
  }
}
