// The fused attention kernel (nn/attention_kernel.cpp) against the plain masked softmax computed
// in float64, for every mask kind, odd sizes across the kernel's 64-query / 256-key tiles,
// grouped-query heads, strided inputs and rows that see no key; forward and backward.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "nn/attention.h"

using namespace longctx;

namespace {

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

struct Case {
  int64_t B, H, Hk, Tq, Tk, dk, dv;
  int64_t q_first;  // position of the first query (keys start at position k_first)
  int64_t k_first;
  int64_t window, sinks;
  bool q_sink;
};

std::string describe(const Case& c) {
  std::ostringstream os;
  os << "B" << c.B << " H" << c.H << "/" << c.Hk << " Tq" << c.Tq << " Tk" << c.Tk << " d" << c.dk << "/" << c.dv
     << " q@" << c.q_first << " k@" << c.k_first << " window " << c.window << " sinks " << c.sinks
     << (c.q_sink ? " q_sink" : "");
  return os.str();
}

// Cases with keys ending where the queries end (a cache before the queries), plus a few odd ones.
std::vector<Case> cases() {
  return {
      {1, 1, 1, 1, 1, 8, 8, 0, 0, 0, 0, false},              // one token
      {2, 3, 3, 67, 67, 16, 16, 0, 0, 0, 0, false},          // causal, odd length over one q tile
      {1, 2, 2, 130, 300, 8, 12, 170, 0, 0, 0, false},       // a cache prefix, dk != dv, > one key chunk
      {1, 4, 2, 129, 129, 8, 8, 0, 0, 0, 0, false},          // grouped queries (2 per key head)
      {1, 4, 1, 70, 600, 8, 8, 530, 0, 0, 0, false},         // multi-query, 3 key chunks
      {2, 2, 2, 200, 200, 8, 8, 0, 0, 37, 0, false},         // sliding window
      {1, 2, 2, 100, 613, 8, 8, 513, 0, 257, 0, false},      // window over a chunk boundary
      {1, 2, 2, 150, 150, 8, 8, 0, 0, 40, 4, false},         // window + sinks scored with q
      {1, 2, 2, 90, 90, 8, 8, 0, 0, 30, 3, true},            // window + sinks scored with q_sink
      {1, 2, 2, 64, 64 + 5, 8, 8, 1000, 995, 16, 0, false},  // far positions
      {1, 2, 2, 40, 30, 8, 8, 0, 10, 0, 0, false},           // queries 0-9 see no key
      {1, 1, 1, 5, 0, 8, 8, 0, 0, 0, 0, false},              // no keys at all
      {2, 4, 2, 1, 600, 8, 12, 599, 0, 0, 0, false},         // decoding: one query over a cache (GEMV path)
      {1, 2, 2, 1, 300, 8, 8, 299, 0, 100, 2, true},         // decoding over window + sinks
  };
}

struct Inputs {
  torch::Tensor q, k, v, qs, qp, kp;
  AttentionOptions o;
};

Inputs make(const Case& c, torch::ScalarType dt) {
  auto to = torch::TensorOptions().dtype(dt);
  Inputs in;
  // q arrives as the mixers give it: [B, T, H, d] transposed to [B, H, T, d] (strided, not contiguous).
  in.q = torch::randn({c.B, c.Tq, c.H, c.dk}, to).transpose(1, 2);
  in.k = torch::randn({c.B, c.Hk, c.Tk, c.dk}, to);
  in.v = torch::randn({c.B, c.Hk, c.Tk, c.dv}, to);
  if (c.q_sink) in.qs = torch::randn({c.B, c.H, c.Tq, c.dk}, to);
  in.qp = torch::arange(c.q_first, c.q_first + c.Tq, torch::kInt64);
  if (c.window > 0 && c.sinks > 0 && c.k_first == 0 && c.Tk > c.Tq) {
    in.kp = torch::arange(0, c.Tk, torch::kInt64);
  } else {
    in.kp = torch::arange(c.k_first, c.k_first + c.Tk, torch::kInt64);
  }
  in.o.window = c.window;
  in.o.n_sink = c.sinks;
  return in;
}

}  // namespace

TEST(AttentionKernel, Float64OutputEqualsTheMaskedSoftmaxForEveryMaskKind) {
  torch::manual_seed(101);
  for (const Case& c : cases()) {
    auto in = make(c, torch::kFloat64);
    auto got = attention(in.q, in.k, in.v, in.qp, in.kp, in.o, in.qs);
    auto want = attention_reference(in.q, in.k, in.v, in.qp, in.kp, in.o, in.qs);
    ASSERT_EQ(got.sizes(), want.sizes()) << describe(c);
    if (got.numel()) {
      EXPECT_LT(max_abs_diff(got, want), 1e-12) << describe(c);
    }
  }
}

TEST(AttentionKernel, Float32OutputIsWithin2e6OfFloat64) {
  torch::manual_seed(102);
  for (const Case& c : cases()) {
    auto in = make(c, torch::kFloat64);
    auto want = attention_reference(in.q, in.k, in.v, in.qp, in.kp, in.o, in.qs);
    auto f = [](const torch::Tensor& t) { return t.defined() ? t.to(torch::kFloat32) : t; };
    auto got = attention(f(in.q), f(in.k), f(in.v), in.qp, in.kp, in.o, f(in.qs));
    EXPECT_EQ(got.scalar_type(), torch::kFloat32);
    if (got.numel()) {
      EXPECT_LT(max_abs_diff(got, want), 2e-6) << describe(c);
    }
  }
}

TEST(AttentionKernel, Float64GradientsEqualTheReferenceGradients) {
  torch::manual_seed(103);
  for (const Case& c : cases()) {
    if (c.Tk == 0) continue;
    auto in = make(c, torch::kFloat64);
    auto leaf = [](const torch::Tensor& t) { return t.defined() ? t.detach().clone().requires_grad_() : t; };
    auto w = torch::randn({c.B, c.H, c.Tq, c.dv}, torch::kFloat64);
    std::vector<torch::Tensor> grads[2];
    for (int ref = 0; ref < 2; ++ref) {
      auto q = leaf(in.q), k = leaf(in.k), v = leaf(in.v), qs = leaf(in.qs);
      auto y = ref ? attention_reference(q, k, v, in.qp, in.kp, in.o, qs) : attention(q, k, v, in.qp, in.kp, in.o, qs);
      (y * w).sum().backward();
      for (auto& t : {q, k, v}) grads[ref].push_back(t.grad());
      if (qs.defined()) grads[ref].push_back(qs.grad());
    }
    const char* names[] = {"dq", "dk", "dv", "dq_sink"};
    for (size_t i = 0; i < grads[0].size(); ++i) {
      ASSERT_TRUE(grads[0][i].defined()) << describe(c) << " " << names[i];
      EXPECT_LT(max_abs_diff(grads[0][i], grads[1][i]), 1e-11) << describe(c) << " " << names[i];
    }
  }
}

TEST(AttentionKernel, Float32GradientsAreWithin1e5OfFloat64) {
  torch::manual_seed(104);
  Case c{2, 4, 2, 150, 150, 16, 16, 0, 0, 60, 4, true};
  auto in = make(c, torch::kFloat64);
  auto w = torch::randn({c.B, c.H, c.Tq, c.dv}, torch::kFloat64);
  std::vector<torch::Tensor> grads[2];
  for (int f32 = 0; f32 < 2; ++f32) {
    auto leaf = [&](const torch::Tensor& t) {
      return (f32 ? t.to(torch::kFloat32) : t).detach().clone().requires_grad_();
    };
    auto q = leaf(in.q), k = leaf(in.k), v = leaf(in.v), qs = leaf(in.qs);
    (attention(q, k, v, in.qp, in.kp, in.o, qs) * (f32 ? w.to(torch::kFloat32) : w)).sum().backward();
    grads[f32] = {q.grad(), k.grad(), v.grad(), qs.grad()};
  }
  for (int i = 0; i < 4; ++i) EXPECT_LT(max_abs_diff(grads[0][i], grads[1][i]), 1e-5) << i;
}

TEST(AttentionKernel, AQueryThatSeesNoKeyGetsZeroOutputAndPassesNoGradient) {
  torch::manual_seed(105);
  auto q = torch::randn({1, 1, 4, 8}, torch::kFloat64).requires_grad_();
  auto k = torch::randn({1, 1, 3, 8}, torch::kFloat64).requires_grad_();
  auto v = torch::randn({1, 1, 3, 8}, torch::kFloat64).requires_grad_();
  auto qp = torch::arange(0, 4, torch::kInt64), kp = torch::arange(2, 5, torch::kInt64);
  auto y = attention(q, k, v, qp, kp);
  EXPECT_EQ(y.narrow(2, 0, 2).abs().max().item<double>(), 0.0);  // positions 0 and 1 precede every key
  EXPECT_GT(y.narrow(2, 2, 2).abs().max().item<double>(), 0.0);
  y.sum().backward();
  EXPECT_EQ(q.grad().narrow(2, 0, 2).abs().max().item<double>(), 0.0);
  EXPECT_FALSE(torch::isnan(k.grad()).any().item<bool>());
}

TEST(AttentionKernel, StreamingInChunksEqualsOneCall) {
  // Chunked calls over a sliding-window cache give the one-call result: visibility depends on
  // positions only.
  torch::manual_seed(106);
  int64_t T = 300, W = 70;
  auto q = torch::randn({1, 2, T, 8}), k = torch::randn({1, 2, T, 8}), v = torch::randn({1, 2, T, 8});
  AttentionOptions o;
  o.window = W;
  auto pos = torch::arange(0, T, torch::kInt64);
  auto whole = attention(q, k, v, pos, pos, o);
  std::vector<torch::Tensor> parts;
  for (int64_t t0 = 0; t0 < T; t0 += 37) {
    int64_t n = std::min<int64_t>(37, T - t0), k0 = std::max<int64_t>(0, t0 - W + 1);
    parts.push_back(attention(q.narrow(2, t0, n), k.narrow(2, k0, t0 + n - k0), v.narrow(2, k0, t0 + n - k0),
                              pos.narrow(0, t0, n), pos.narrow(0, k0, t0 + n - k0), o));
  }
  EXPECT_LT(max_abs_diff(torch::cat(parts, 2), whole), 1e-6);
}

// Splits [0, n) at up to 3 random points (a piece may be empty).
std::vector<int64_t> cuts(int64_t n, torch::Generator& gen) {
  std::vector<int64_t> c{0, n};
  for (int i = 0; i < 3 && n > 0; ++i) c.push_back(torch::randint(0, n + 1, {1}, gen).item<int64_t>());
  std::sort(c.begin(), c.end());
  return c;
}

// The same keys laid out time-major ([T, B, H, d] viewed as [B, H, T, d]), as a KV cache holds them.
torch::Tensor time_major(const torch::Tensor& t) { return t.permute({2, 0, 1, 3}).contiguous().permute({1, 2, 0, 3}); }

TEST(AttentionKernel, KeysInPiecesGiveTheResultOverTheirConcatenation) {
  torch::manual_seed(107);
  auto gen = torch::make_generator<torch::CPUGeneratorImpl>(107);
  torch::NoGradGuard ng;
  for (const Case& c : cases()) {
    if (c.Tk == 0) continue;
    for (int trial = 0; trial < 3; ++trial) {
      auto in = make(c, torch::kFloat64);
      auto cut = cuts(c.Tk, gen);
      std::vector<torch::Tensor> ks, vs;
      for (size_t i = 0; i + 1 < cut.size(); ++i) {
        auto k = in.k.narrow(2, cut[i], cut[i + 1] - cut[i]), v = in.v.narrow(2, cut[i], cut[i + 1] - cut[i]);
        ks.push_back(i % 2 ? time_major(k) : k);
        vs.push_back(i % 2 ? time_major(v) : v);
      }
      auto got = attention_pieces(in.q, ks, vs, in.qp, in.kp, in.o, in.qs);
      auto want = attention_reference(in.q, in.k, in.v, in.qp, in.kp, in.o, in.qs);
      ASSERT_EQ(got.sizes(), want.sizes()) << describe(c);
      if (got.numel()) {
        EXPECT_LT(max_abs_diff(got, want), 1e-12) << describe(c) << " pieces " << ks.size();
      }
    }
  }
}

TEST(AttentionKernel, KeysInPiecesPassGradientsToEachPiece) {
  torch::manual_seed(108);
  Case c{1, 4, 2, 90, 90, 8, 8, 0, 0, 30, 3, true};
  auto in = make(c, torch::kFloat64);
  auto w = torch::randn({c.B, c.H, c.Tq, c.dv}, torch::kFloat64);
  auto leaf = [](const torch::Tensor& t) { return t.detach().clone().requires_grad_(); };
  auto k1 = leaf(in.k.narrow(2, 0, 3)), k2 = leaf(in.k.narrow(2, 3, 87));
  auto v1 = leaf(in.v.narrow(2, 0, 3)), v2 = leaf(in.v.narrow(2, 3, 87));
  auto k = leaf(in.k), v = leaf(in.v);
  (attention_pieces(in.q, {k1, k2}, {v1, v2}, in.qp, in.kp, in.o, in.qs) * w).sum().backward();
  (attention(in.q, k, v, in.qp, in.kp, in.o, in.qs) * w).sum().backward();
  EXPECT_LT(max_abs_diff(torch::cat({k1.grad(), k2.grad()}, 2), k.grad()), 1e-12);
  EXPECT_LT(max_abs_diff(torch::cat({v1.grad(), v2.grad()}, 2), v.grad()), 1e-12);
}
