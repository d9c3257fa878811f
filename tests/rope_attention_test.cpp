#include <cmath>

#include "nn/attention.h"
#include "nn/rope.h"
#include "test_util.h"

using namespace longctx;
using namespace longctx::testing;

TEST(Rope, RotatingByAThenBEqualsRotatingByAPlusB) {
  for (bool inter : {false, true}) {
    RopeOptions o;
    o.dim = 16;
    o.interleaved = inter;
    Rope r(o);
    torch::manual_seed(2);
    auto x = torch::randn({2, 3, 5, 16}, torch::kFloat64);
    auto a = torch::tensor({0, 7, 100, 5000, 999983}, torch::kInt64);
    auto b = torch::tensor({3, 11, 250, 1, 17}, torch::kInt64);
    auto ab = r.apply(r.apply(x, a), b);
    auto direct = r.apply(x, a + b);
    EXPECT_LT(max_abs_diff(ab, direct), 1e-9) << "interleaved=" << inter;
  }
}

TEST(Rope, ScoresDependOnlyOnRelativePosition) {
  RopeOptions o;
  o.dim = 8;
  Rope r(o);
  auto q = torch::randn({1, 1, 1, 8}, torch::kFloat64), k = torch::randn({1, 1, 1, 8}, torch::kFloat64);
  auto s = [&](int64_t m, int64_t n) {
    return (r.apply(q, torch::tensor({m})) * r.apply(k, torch::tensor({n}))).sum().item<double>();
  };
  EXPECT_NEAR(s(10, 3), s(1000007, 1000000), 1e-9);
  EXPECT_NEAR(s(5, 5), s(0, 0), 1e-12);
}

TEST(Rope, MatchesTheFormulaComputedByHand) {
  RopeOptions o;
  o.dim = 4;
  o.base = 10000;
  Rope r(o);
  auto x = torch::tensor({1.0, 2.0, 3.0, 4.0}, torch::kFloat64).view({1, 1, 1, 4});
  int64_t p = 123456;
  auto y = r.apply(x, torch::tensor({p}));
  // rotate-half: pairs (x0, x2) at theta_0 = 1, (x1, x3) at theta_1 = 10000^(-1/2)
  double t0 = p * 1.0, t1 = p * std::pow(10000.0, -0.5);
  std::vector<double> want = {1 * std::cos(t0) - 3 * std::sin(t0), 2 * std::cos(t1) - 4 * std::sin(t1),
                              1 * std::sin(t0) + 3 * std::cos(t0), 2 * std::sin(t1) + 4 * std::cos(t1)};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y.view({4})[i].item<double>(), want[i], 1e-9);
}

TEST(Rope, Float32AnglesStayAccurateAtMillionsOfPositions) {
  RopeOptions o;
  o.dim = 32;
  Rope r(o);
  auto x = torch::randn({1, 1, 4, 32});
  auto pos = torch::tensor({1000000, 2000001, 3999999, 12345678}, torch::kInt64);
  auto y32 = r.apply(x, pos);
  auto y64 = r.apply(x.to(torch::kFloat64), pos);
  EXPECT_LT(max_abs_diff(y32, y64), 1e-5);
}

TEST(Rope, FewPositionsAgreeWithTheTensorPathWithAndWithoutScaling) {
  // Up to 16 positions on the CPU take a direct path (cos/sin from the positions, no tensor ops):
  // it must give what rotate(angles) gives, for both layouts, dtypes, scaling and LongRoPE's n-hat.
  for (bool inter : {false, true})
    for (bool scaled : {false, true})
      for (auto dt : {torch::kFloat32, torch::kFloat64}) {
        RopeOptions o;
        o.dim = 16;
        o.interleaved = inter;
        Rope r(o);
        torch::manual_seed(7);
        if (scaled) r.set_scaling(1 + 3 * torch::rand({8}, torch::kFloat64), 1.1, 100);
        for (int64_t T : {1, 5, 16}) {
          auto x = torch::randn({2, T, 3, 16}, dt);
          auto pos = torch::tensor(std::vector<int64_t>{0, 99, 100, 999983, 123456789, 7, 8, 9, 10, 11, 12, 13, 14,
                                                        15, 16, 17})
                         .narrow(0, 0, T);
          auto fast = r.apply(x, pos, 1);
          auto general = r.rotate(x, r.angles(pos), r.attention_scale(), 1);
          EXPECT_LT(max_abs_diff(fast, general), dt == torch::kFloat64 ? 1e-12 : 2e-6)
              << "interleaved " << inter << " scaled " << scaled << " T " << T;
        }
      }
}

namespace {
// Naive float64 reference: explicit loops over queries and keys.
torch::Tensor naive(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& qp,
                    const torch::Tensor& kp, int64_t window, int64_t sinks, const torch::Tensor& qs) {
  auto Q = q.to(torch::kFloat64), K = k.to(torch::kFloat64), V = v.to(torch::kFloat64);
  auto QS = qs.defined() ? qs.to(torch::kFloat64) : Q;
  int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), d = q.size(3);
  auto out = torch::zeros({B, H, Tq, d}, torch::kFloat64);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        int64_t pi = qp[i].item<int64_t>();
        std::vector<double> s;
        std::vector<int64_t> idx;
        for (int64_t j = 0; j < Tk; ++j) {
          int64_t pj = kp[j].item<int64_t>();
          bool vis = pj <= pi && (window == 0 || pi - pj < window || pj < sinks);
          if (!vis) continue;
          auto qq = (pj < sinks && qs.defined()) ? QS[b][h][i] : Q[b][h][i];
          s.push_back((qq * K[b][h][j]).sum().item<double>() / std::sqrt(double(d)));
          idx.push_back(j);
        }
        double m = *std::max_element(s.begin(), s.end()), z = 0;
        for (auto& x : s) z += std::exp(x - m);
        for (size_t n = 0; n < s.size(); ++n) out[b][h][i] += std::exp(s[n] - m) / z * V[b][h][idx[n]];
      }
  return out;
}
}  // namespace

TEST(Attention, BlockedKernelMatchesFloat64NaiveLoop) {
  torch::manual_seed(3);
  struct Case {
    int64_t window, sinks, q_block;
    bool with_qsink;
  };
  for (Case c : {Case{0, 0, 256, false}, Case{0, 0, 3, false}, Case{5, 0, 4, false}, Case{5, 2, 1, true},
                 Case{4, 3, 7, true}, Case{6, 2, 5, false}}) {
    int64_t Tk = 23, Tq = 9, off = Tk - Tq;  // queries are the last Tq keys (a cache prefix before them)
    auto q = torch::randn({2, 2, Tq, 8}), k = torch::randn({2, 2, Tk, 8}), v = torch::randn({2, 2, Tk, 8});
    auto kp = torch::arange(0, Tk, torch::kInt64), qp = torch::arange(off, Tk, torch::kInt64);
    torch::Tensor qs = c.with_qsink ? torch::randn({2, 2, Tq, 8}) : torch::Tensor();
    AttentionOptions o;
    o.window = c.window;
    o.n_sink = c.sinks;
    o.q_block = c.q_block;
    auto got = attention(q, k, v, qp, kp, o, qs);
    auto want = naive(q, k, v, qp, kp, c.window, c.sinks, qs);
    EXPECT_LT(max_abs_diff(got, want), 1e-5) << "window " << c.window << " sinks " << c.sinks << " block " << c.q_block;
    EXPECT_LT(max_abs_diff(attention_reference(q, k, v, qp, kp, o, qs), want), 1e-5);
  }
}

TEST(Attention, WindowedKernelSkipsKeysOutsideTheWindow) {
  // Sparse key positions (sinks then a far window) exercise the binary search on positions.
  torch::manual_seed(4);
  auto kp = torch::cat({torch::arange(0, 2, torch::kInt64), torch::arange(1000, 1010, torch::kInt64)});
  auto qp = torch::arange(1005, 1010, torch::kInt64);
  auto q = torch::randn({1, 1, 5, 4}), k = torch::randn({1, 1, 12, 4}), v = torch::randn({1, 1, 12, 4});
  AttentionOptions o;
  o.window = 4;
  o.n_sink = 2;
  o.q_block = 2;
  auto got = attention(q, k, v, qp, kp, o);
  EXPECT_LT(max_abs_diff(got, naive(q, k, v, qp, kp, 4, 2, {})), 1e-5);
}

TEST(Attention, GradientsMatchFiniteDifferences) {
  torch::manual_seed(5);
  auto opts = torch::TensorOptions().dtype(torch::kFloat64);
  auto q = torch::randn({1, 1, 4, 3}, opts).requires_grad_(), k = torch::randn({1, 1, 6, 3}, opts).requires_grad_(),
       v = torch::randn({1, 1, 6, 3}, opts).requires_grad_();
  auto kp = torch::arange(0, 6, torch::kInt64), qp = torch::arange(2, 6, torch::kInt64);
  AttentionOptions o;
  o.window = 3;
  o.q_block = 2;
  auto w = torch::randn({1, 1, 4, 3}, opts);
  auto f = [&] { return (attention(q, k, v, qp, kp, o) * w).sum(); };
  f().backward();
  for (auto* t : {&q, &k, &v}) {
    auto g = t->grad().clone();
    auto flat = t->data().view({-1});
    for (int64_t i = 0; i < flat.numel(); ++i) {
      double old = flat[i].item<double>(), h = 1e-6;
      flat[i] = old + h;
      double fp = f().item<double>();
      flat[i] = old - h;
      double fm = f().item<double>();
      flat[i] = old;
      EXPECT_NEAR(g.view({-1})[i].item<double>(), (fp - fm) / (2 * h), 1e-6);
    }
  }
}
