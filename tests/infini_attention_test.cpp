// Infini-attention against a float64 reference written as plain loops (MECHANISMS.md section 1),
// plus the properties that failed reproductions got wrong: gates that learn, float32 memory,
// memory that reaches past the segment.
#include <cmath>

#include "mixers/infini_attention.h"
#include "model/pretrained.h"
#include "train/optim.h"
#include "model/lm.h"
#include "test_util.h"

using namespace longctx;
using namespace longctx::testing;

namespace {

using Acc = torch::TensorAccessor<double, 2>;

double elu1(double x) { return x > 0 ? x + 1 : std::exp(x); }

// DeltaNet's feature: SiLU, then unit L2 norm.
std::vector<double> phi(Acc a, int64_t t, int64_t d) {
  std::vector<double> r(d);
  double n = 0;
  for (int64_t i = 0; i < d; ++i) {
    double x = a[t][i];
    r[i] = x / (1 + std::exp(-x));
    n += r[i] * r[i];
  }
  n = std::max(std::sqrt(n), 1e-6);
  for (auto& e : r) e /= n;
  return r;
}

// out[t] for one (batch, head): q, k, v are [T, d] before RoPE.
// betas (deltanet only): [T] write strengths; defined selects DeltaNet's memory.
torch::Tensor reference_head(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t N,
                             bool delta, double gate, double eps, double base, torch::Tensor betas = {},
                             bool token_read = false, bool window_local = false, torch::Tensor mq = {},
                             torch::Tensor mk = {}, torch::Tensor alphas = {}) {
  const bool dnet = betas.defined();
  if (!mq.defined()) mq = q, mk = k;  // the memory's queries and keys (after qk_conv when set)
  auto mqa = mq.accessor<double, 2>(), mka = mk.accessor<double, 2>();
  // DeltaNet's write of token t: M += b_t k_t (v_t - k_t^T M), after M *= alpha_t with a decay.
  auto write = [&](std::vector<std::vector<double>>& M, int64_t t) {
    auto va = v.accessor<double, 2>();
    if (alphas.defined())
      for (auto& row : M)
        for (auto& e : row) e *= alphas[t].item<double>();
    auto kt = phi(mka, t, k.size(1));
    double bt = betas[t].item<double>();
    for (int64_t c = 0; c < v.size(1); ++c) {
      double r = 0;
      for (int64_t i = 0; i < k.size(1); ++i) r += kt[i] * M[i][c];
      for (int64_t i = 0; i < k.size(1); ++i) M[i][c] += bt * kt[i] * (va[t][c] - r);
    }
  };
  const int64_t T = q.size(0), d = q.size(1);
  auto qa = q.accessor<double, 2>(), ka = k.accessor<double, 2>(), va = v.accessor<double, 2>();
  auto rope = [&](Acc a, int64_t t) {
    std::vector<double> r(d);
    for (int64_t i = 0; i < d / 2; ++i) {
      double th = double(t) * std::pow(base, -2.0 * i / double(d));
      r[i] = a[t][i] * std::cos(th) - a[t][i + d / 2] * std::sin(th);
      r[i + d / 2] = a[t][i + d / 2] * std::cos(th) + a[t][i] * std::sin(th);
    }
    return r;
  };
  std::vector<std::vector<double>> M(d, std::vector<double>(d, 0.0));
  std::vector<double> z(d, 0.0);
  auto out = torch::zeros({T, d}, torch::kFloat64);
  auto oa = out.accessor<double, 2>();
  for (int64_t s0 = 0; s0 < T; s0 += N) {
    int64_t s1 = std::min(T, s0 + N);
    for (int64_t t = s0; t < s1; ++t) {
      if (dnet && token_read) write(M, t);  // the token reads the memory after its own write
      auto qt = rope(qa, t);
      std::vector<double> sc;
      double mx = -1e300;
      const int64_t j0 = window_local ? std::max<int64_t>(0, t - N + 1) : s0;  // the local keys
      for (int64_t j = j0; j <= t; ++j) {
        auto kj = rope(ka, j);
        double dot = 0;
        for (int64_t i = 0; i < d; ++i) dot += qt[i] * kj[i];
        sc.push_back(dot / std::sqrt(double(d)));
        mx = std::max(mx, sc.back());
      }
      double sum = 0;
      for (auto& e : sc) sum += (e = std::exp(e - mx));
      std::vector<double> sq(d);
      double den = 0;
      if (dnet) sq = phi(mqa, t, d), den = 1.0;  // no normaliser
      else for (int64_t i = 0; i < d; ++i) den += (sq[i] = elu1(qa[t][i])) * z[i];
      for (int64_t c = 0; c < d; ++c) {
        double local = 0, num = 0;
        for (int64_t j = j0; j <= t; ++j) local += sc[j - j0] / sum * va[j][c];
        for (int64_t i = 0; i < d; ++i) num += sq[i] * M[i][c];
        oa[t][c] = gate * num / std::max(den, eps) + (1 - gate) * local;
      }
    }
    if (s1 - s0 < N) break;  // a partial segment is not folded into memory
    if (dnet) {  // the segment token by token (already written when tokens read their own writes)
      if (!token_read)
        for (int64_t t = s0; t < s1; ++t) write(M, t);
      continue;
    }
    auto M0 = M;
    auto z0 = z;
    for (int64_t t = s0; t < s1; ++t) {
      std::vector<double> sk(d);
      double den = 0;
      for (int64_t i = 0; i < d; ++i) den += (sk[i] = elu1(ka[t][i])) * z0[i];
      for (int64_t c = 0; c < d; ++c) {
        double r = 0;
        for (int64_t i = 0; i < d; ++i) r += sk[i] * M0[i][c];
        double val = va[t][c] - (delta ? r / std::max(den, eps) : 0.0);
        for (int64_t i = 0; i < d; ++i) M[i][c] += sk[i] * val;
      }
      for (int64_t i = 0; i < d; ++i) z[i] += sk[i];
    }
  }
  return out;
}

torch::Tensor reference(InfiniAttentionMixer& m, const torch::Tensor& x) {
  const auto& o = m.options();
  int64_t B = x.size(0), T = x.size(1), H = o.n_heads, d = o.d_model / H;
  auto q = torch::matmul(x, m.q_proj->weight.t()).view({B, T, H, d});
  auto k = torch::matmul(x, m.k_proj->weight.t()).view({B, T, H, d});
  auto v = torch::matmul(x, m.v_proj->weight.t()).view({B, T, H, d});
  auto y = torch::zeros({B, T, H, d}, torch::kFloat64);
  const bool dnet = o.update == InfiniAttentionOptions::Update::deltanet;
  torch::Tensor betas;
  if (dnet) betas = torch::sigmoid(m.beta_proj(x).to(torch::kFloat64));  // [B,T,H]
  torch::Tensor alphas;  // Gated DeltaNet's decay: alpha = exp(-exp(x W_a + c))
  if (o.decay) alphas = torch::exp(-torch::exp(m.decay_proj(x).to(torch::kFloat64)));
  // qk_conv: the memory's queries and keys through the causal convolution, as plain loops (zeros
  // before the stream's start).
  auto mq = q.clone(), mk = k.clone();
  if (o.qk_conv > 0) {
    const int64_t K = o.qk_conv, D = H * d;
    auto w = m.qk_conv.to(torch::kFloat64);
    auto qf = q.reshape({B, T, D}), kf = k.reshape({B, T, D});
    auto mqf = torch::zeros({B, T, D}, torch::kFloat64), mkf = torch::zeros({B, T, D}, torch::kFloat64);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < D; ++c) {
          double sq = 0, sk = 0;
          for (int64_t j = 0; j < K; ++j) {
            const int64_t u = t - (K - 1) + j;
            if (u < 0) continue;
            sq += w[c][j].item<double>() * qf[b][u][c].item<double>();
            sk += w[D + c][j].item<double>() * kf[b][u][c].item<double>();
          }
          mqf[b][t][c] = sq, mkf[b][t][c] = sk;
        }
    mq = mqf.view({B, T, H, d}), mk = mkf.view({B, T, H, d});
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      double g = 1.0 / (1.0 + std::exp(-m.memory_gate[h].item<double>()));
      y.select(0, b).select(1, h).copy_(reference_head(q[b].select(1, h).contiguous(), k[b].select(1, h).contiguous(),
                                                       v[b].select(1, h).contiguous(), o.segment,
                                                       o.update == InfiniAttentionOptions::Update::delta, g, o.eps,
                                                       o.rope.base, dnet ? betas[b].select(1, h).contiguous() : torch::Tensor(),
                                                       o.token_read, o.window_local, mq[b].select(1, h).contiguous(),
                                                       mk[b].select(1, h).contiguous(),
                                                       o.decay ? alphas[b].select(1, h).contiguous() : torch::Tensor()));
    }
  return torch::matmul(y.view({B, T, H * d}), m.o_proj->weight.t());
}

// Copies every parameter of `from` into the same-named parameter of `to` (no gradient).
void copy_params(torch::nn::Module& from, torch::nn::Module& to) {
  torch::NoGradGuard ng;
  auto src = from.named_parameters();
  for (auto& p : to.named_parameters()) p.value().copy_(src[p.key()]);
}

// Analytic gradients `grad` of `loss` at `x` against central finite differences (h = 1e-6,
// float64), at every `stride`-th entry.
template <class Loss>
void expect_grad_matches_fd(const torch::Tensor& x, const torch::Tensor& grad, Loss&& loss, int64_t stride,
                            const std::string& what) {
  auto flat = x.detach().view({-1});
  auto gf = grad.view({-1});
  torch::NoGradGuard ng;
  for (int64_t i = 0; i < flat.numel(); i += stride) {
    double x0 = flat[i].item<double>(), h = 1e-6;
    flat[i] = x0 + h;
    double lp = loss().template item<double>();
    flat[i] = x0 - h;
    double lm = loss().template item<double>();
    flat[i] = x0;
    double fd = (lp - lm) / (2 * h);
    EXPECT_NEAR(gf[i].item<double>(), fd, 1e-6 * std::max(1.0, std::abs(fd))) << what << "[" << i << "]";
  }
}

// Every parameter of mixer `m` (sampled entries) against central finite differences of a random
// projection of its output over 17 tokens (several segments of 5).
void expect_mixer_grads_match_fd(InfiniAttentionMixer& m, const std::string& what) {
  auto x = torch::randn({1, 17, 16}, torch::kFloat64);
  auto Ry = torch::randn({1, 17, 16}, torch::kFloat64);
  auto mloss = [&] {
    State s;
    StepContext ctx;
    return (m.forward(x, s, ctx) * Ry).sum();
  };
  m.zero_grad();
  mloss().backward();
  for (auto& item : m.named_parameters())
    expect_grad_matches_fd(item.value(), item.value().grad(), mloss, std::max<int64_t>(1, item.value().numel() / 7),
                           item.key() + " " + what);
}

using Update = InfiniAttentionOptions::Update;

InfiniAttentionMixer make_mixer(int64_t segment, Update update, torch::Dtype dt = torch::kFloat64, int64_t chunk = 64,
                                bool token_read = false, bool window_local = false, int64_t qk_conv = 0,
                                bool decay = false) {
  InfiniAttentionOptions o;
  o.d_model = 16, o.n_heads = 2, o.segment = segment, o.update = update, o.chunk = chunk, o.token_read = token_read;
  o.window_local = window_local, o.qk_conv = qk_conv, o.decay = decay;
  o.rope.dim = 8;
  InfiniAttentionMixer m(o);
  torch::NoGradGuard ng;
  for (auto& p : m.parameters()) p.normal_(0, 0.5);
  m.to(dt);
  return m;
}

}  // namespace

TEST(InfiniAttention, MatchesFloat64PlainLoopReferenceForBothUpdateRules) {
  torch::NoGradGuard ng;
  torch::manual_seed(3);
  for (bool delta : {true, false}) {
    auto m = make_mixer(7, delta ? Update::delta : Update::linear);
    auto x = torch::randn({2, 40, 16}, torch::kFloat64);  // 5 full segments and a partial one
    State s;
    StepContext ctx;
    auto y = m.forward(x, s, ctx);
    auto ref = reference(m, x);
    EXPECT_LT(max_abs_diff(y, ref), 1e-10) << (delta ? "delta" : "linear");
    // Float32 compute (memory in float32) within float tolerance of the float64 reference.
    auto m32 = make_mixer(7, delta ? Update::delta : Update::linear);
    copy_params(m, m32);
    m32.to(torch::kFloat32);
    State s32;
    auto y32 = m32.forward(x.to(torch::kFloat32), s32, ctx);
    EXPECT_LT(max_abs_diff(y32, ref), 1e-4) << (delta ? "delta" : "linear");
    EXPECT_EQ(s32.at("M").scalar_type(), torch::kFloat32);
  }
}

TEST(InfiniAttention, MemoryReadAndBothUpdatesMatchPlainLoops) {
  torch::manual_seed(4);
  int64_t T = 9, dk = 5, dv = 3;
  auto sk = torch::rand({1, 1, T, dk}, torch::kFloat64) + 0.1;
  auto v = torch::randn({1, 1, T, dv}, torch::kFloat64);
  auto M0 = torch::randn({1, 1, dk, dv}, torch::kFloat64);
  auto z0 = torch::rand({1, 1, dk}, torch::kFloat64) + 1;
  for (bool delta : {true, false}) {
    auto M = M0.clone(), z = z0.clone();
    infini_memory_update(M, z, sk, v, delta, 1e-6);
    auto skt = sk[0][0].contiguous(), vt = v[0][0].contiguous(), mt = M0[0][0].contiguous(),
         zt = z0[0][0].contiguous();
    auto a = skt.accessor<double, 2>(), va = vt.accessor<double, 2>();
    auto m0 = mt.accessor<double, 2>();
    auto zz = zt.accessor<double, 1>();
    for (int64_t c = 0; c < dv; ++c)
      for (int64_t i = 0; i < dk; ++i) {
        double e = m0[i][c];
        for (int64_t t = 0; t < T; ++t) {
          double num = 0, den = 0;
          for (int64_t j = 0; j < dk; ++j) num += a[t][j] * m0[j][c], den += a[t][j] * zz[j];
          e += a[t][i] * (va[t][c] - (delta ? num / den : 0.0));
        }
        EXPECT_NEAR(M[0][0][i][c].item<double>(), e, 1e-12);
      }
    for (int64_t i = 0; i < dk; ++i) {
      double e = zz[i];
      for (int64_t t = 0; t < T; ++t) e += a[t][i];
      EXPECT_NEAR(z[0][0][i].item<double>(), e, 1e-12);
    }
  }
  // Read: row-wise ratio; an empty memory reads exactly zero (0/0 guarded), never NaN.
  auto r = infini_memory_read(sk, M0, z0, 1e-6);
  EXPECT_LT(max_abs_diff(r, torch::matmul(sk, M0) / torch::matmul(sk, z0.unsqueeze(-1))), 1e-12);
  auto r0 = infini_memory_read(sk, torch::zeros_like(M0), torch::zeros_like(z0), 1e-6);
  EXPECT_TRUE(torch::all(r0 == 0).item<bool>());
}

TEST(InfiniAttention, GateGradientIsNonZeroAndGatesAreLogged) {
  torch::manual_seed(5);
  auto m = make_mixer(5, Update::delta, torch::kFloat32);
  auto x = torch::randn({2, 23, 16});
  State s;
  StepContext ctx;
  m.forward(x, s, ctx).pow(2).mean().backward();
  ASSERT_TRUE(m.memory_gate.grad().defined());
  EXPECT_GT(m.memory_gate.grad().abs().min().item<double>(), 0) << "every head's gate gets a gradient";
  auto d = m.diagnostics(State());
  ASSERT_EQ(d["gate"].size(), 2u);
  EXPECT_NEAR(d["gate"][0], 1.0 / (1.0 + std::exp(-m.memory_gate[0].item<double>())), 1e-6);
}

TEST(InfiniAttention, BackPropagatesThroughMemoryAcrossSegmentsUnlessDetached) {
  torch::manual_seed(6);
  for (int64_t detach : {0, 1}) {
    auto m = make_mixer(4, Update::delta, torch::kFloat32);
    InfiniAttentionOptions o = m.options();
    o.detach_every = detach;
    InfiniAttentionMixer md(o);
    copy_params(m, md);
    auto x = torch::randn({1, 12, 16}).requires_grad_(true);
    State s;
    StepContext ctx;
    auto y = md.forward(x, s, ctx);
    y.narrow(1, 8, 4).sum().backward();  // third segment's outputs
    double g_first = x.grad().narrow(1, 0, 4).abs().sum().item<double>();
    if (detach == 0) {
      EXPECT_GT(g_first, 0) << "the third segment reads memory written by the first";
    } else {
      EXPECT_EQ(g_first, 0) << "detach_every 1 cuts the graph at every update";
    }
  }
}

TEST(InfiniAttention, MemoryReachesPastTheSegmentWithFloat32StateUnderBF16) {
  torch::NoGradGuard ng;
  torch::manual_seed(7);
  ModelConfig c;
  c.d_model = 32, c.n_layers = 1, c.n_heads = 4, c.d_ff = 64;
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "segment": 8})");
  CausalLM m(c);
  auto x = torch::randint(0, 256, {1, 40}, torch::kInt64);
  auto y = x.clone();
  y[0][3] = (y[0][3].item<int64_t>() + 1) % 256;  // first segment; one layer: local sees only its segment
  auto s1 = m->new_state(), s2 = m->new_state();
  EXPECT_GT(max_abs_diff(m->forward(x, s1).narrow(1, 32, 8), m->forward(y, s2).narrow(1, 32, 8)), 1e-6);
  // State: M and z per head plus the partial segment; float32 under bfloat16 compute.
  m->to(torch::kBFloat16);
  auto s3 = m->new_state();
  m->forward(x.narrow(1, 0, 13), s3);
  EXPECT_EQ(s3.layers[0].at("M").scalar_type(), torch::kFloat32);
  EXPECT_EQ(s3.layers[0].at("z").scalar_type(), torch::kFloat32);
  EXPECT_EQ(s3.layers[0].at("M").sizes(), (std::vector<int64_t>{1, 4, 8, 8}));
}

TEST(InfiniAttention, MemoryAblationLeavesTheGatedLocalAttentionOfEachSegment) {
  // read_memory = false (an evaluation ablation): every segment's output is what the mixer gives
  // on that segment alone with an empty memory, (1 - sigmoid(beta)) x local attention; the first
  // segment, where memory is empty anyway, is unchanged.
  torch::NoGradGuard ng;
  torch::manual_seed(12);
  auto m = make_mixer(6, Update::delta);
  InfiniAttentionOptions o = m.options();
  o.read_memory = false;
  InfiniAttentionMixer ablated(o);
  copy_params(m, ablated);
  ablated.to(torch::kFloat64);
  auto x = torch::randn({2, 12, 16}, torch::kFloat64);
  StepContext ctx;
  State s1, s2, s3;
  auto y_on = m.forward(x, s1, ctx), y_off = ablated.forward(x, s2, ctx);
  EXPECT_LT(max_abs_diff(y_on.narrow(1, 0, 6), y_off.narrow(1, 0, 6)), 1e-12);
  EXPECT_GT(max_abs_diff(y_on.narrow(1, 6, 6), y_off.narrow(1, 6, 6)), 1e-3);
  // The second segment alone through the full mixer: memory empty, so it is the same gated local
  // attention (RoPE is relative, so the position shift changes nothing beyond rounding).
  auto alone = m.forward(x.narrow(1, 6, 6), s3, ctx);
  EXPECT_LT(max_abs_diff(alone, y_off.narrow(1, 6, 6)), 1e-10);
  // The memory is still written, so the state is the same as with reading on.
  EXPECT_LT(max_abs_diff(s1.at("M"), s2.at("M")), 1e-12);
  Fields f(nlohmann::json::parse(R"({"read_memory": false})"), "cfg.json", "model.mixer");
  EXPECT_FALSE(InfiniAttentionOptions::parse(f, 16, 2, RopeOptions{}).read_memory);
}

TEST(InfiniAttention, BadConfigIsRefusedByField) {
  ModelConfig c;
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "update": "hebbian"})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"cfg.json", "update", "hebbian"});
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "segment": 0})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"segment"});
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "segmnt": 64})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"segmnt"});
}

TEST(InfiniAttention, GatesGetTheirOwnOptimizerGroupWithoutWeightDecay) {
  ModelConfig c;
  c.d_model = 32, c.n_layers = 2, c.n_heads = 4, c.d_ff = 64;
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "segment": 8})");
  CausalLM m(c);
  TrainConfig t;
  t.weight_decay = 0.1;
  t.param_groups.push_back({"memory_gate", 30.0, 0.0});
  auto groups = make_param_groups(named_weights(m), t);
  bool found = false;
  for (auto& g : groups)
    if (g.name == "match:memory_gate") {
      found = true;
      EXPECT_EQ(g.params.size(), 2u);
      EXPECT_EQ(g.weight_decay, 0.0);
      EXPECT_EQ(g.lr_scale, 30.0);
    }
  EXPECT_TRUE(found);
}

// ---- DeltaNet's memory ("update": "deltanet"; ../shared/RETRIEVAL.md section 2) ----

namespace {

// The delta rule token by token in float64 plain loops: M += b_t k_t (v_t - k_t^T M), after
// M *= exp(log_alpha_t) when a decay is given.
torch::Tensor deltanet_loops(const torch::Tensor& M0, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& beta, const torch::Tensor& log_alpha = {}) {
  auto M = M0.to(torch::kFloat64).clone().contiguous();
  auto kk = k.to(torch::kFloat64).contiguous(), vv = v.to(torch::kFloat64).contiguous();
  auto bb = beta.to(torch::kFloat64).contiguous();
  const int64_t B = k.size(0), H = k.size(1), T = k.size(2), dk = k.size(3), dv = v.size(3);
  auto Ma = M.accessor<double, 4>();
  auto ka = kk.accessor<double, 4>(), va = vv.accessor<double, 4>();
  auto ba = bb.accessor<double, 3>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < dv; ++c) {
          if (log_alpha.defined()) {
            const double a = std::exp(log_alpha[b][h][t].item<double>());
            for (int64_t i = 0; i < dk; ++i) Ma[b][h][i][c] *= a;
          }
          double r = 0;
          for (int64_t i = 0; i < dk; ++i) r += ka[b][h][t][i] * Ma[b][h][i][c];
          for (int64_t i = 0; i < dk; ++i) Ma[b][h][i][c] += ba[b][h][t] * ka[b][h][t][i] * (va[b][h][t][c] - r);
        }
  return M;
}

}  // namespace

TEST(DeltaNet, ChunkedUpdateMatchesFloat64TokenRecurrenceForEveryChunkSize) {
  torch::NoGradGuard ng;
  torch::manual_seed(21);
  const int64_t B = 2, H = 3, T = 37, dk = 6, dv = 5;
  auto k = deltanet_feature(torch::randn({B, H, T, dk}, torch::kFloat64));
  auto v = torch::randn({B, H, T, dv}, torch::kFloat64);
  auto beta = torch::rand({B, H, T}, torch::kFloat64);
  for (bool incoming : {false, true}) {
    auto M0 = incoming ? torch::randn({B, H, dk, dv}, torch::kFloat64) : torch::zeros({B, H, dk, dv}, torch::kFloat64);
    auto ref = deltanet_loops(M0, k, v, beta);
    for (int64_t chunk : {1, 4, 7, 16, 37, 64}) {
      auto m64 = deltanet_memory_update(M0, k, v, beta, chunk);
      EXPECT_LT(max_abs_diff(m64, ref), 1e-12) << "chunk " << chunk << " incoming " << incoming;
      auto m32 = deltanet_memory_update(M0.to(torch::kFloat32), k.to(torch::kFloat32), v.to(torch::kFloat32),
                                        beta.to(torch::kFloat32), chunk);
      EXPECT_EQ(m32.scalar_type(), torch::kFloat32);
      EXPECT_LT(max_abs_diff(m32, ref), 1e-5) << "float32, chunk " << chunk << " incoming " << incoming;
    }
  }
  // The feature: unit rows, SiLU before the norm.
  auto x = torch::randn({4, 9}, torch::kFloat64);
  auto f = deltanet_feature(x);
  EXPECT_LT(max_abs_diff(f.norm(2, -1), torch::ones({4}, torch::kFloat64)), 1e-12);
  EXPECT_LT(max_abs_diff(f * torch::silu(x).norm(2, -1, true), torch::silu(x)), 1e-12);
}

TEST(DeltaNet, MixerMatchesFloat64PlainLoopReferenceWithoutNormaliser) {
  torch::NoGradGuard ng;
  torch::manual_seed(22);
  for (auto [chunk, token_read] : std::vector<std::pair<int64_t, bool>>{{3, false}, {64, false}, {3, true}, {64, true}}) {
    auto m = make_mixer(7, Update::deltanet, torch::kFloat64, chunk, token_read);
    auto x = torch::randn({2, 40, 16}, torch::kFloat64);  // 5 full segments and a partial one
    State s;
    StepContext ctx;
    std::vector<std::map<std::string, torch::Tensor>> rec;
    ctx.record = &rec;
    auto y = m.forward(x, s, ctx);
    EXPECT_LT(max_abs_diff(y, reference(m, x)), 1e-10) << "chunk " << chunk << " token_read " << token_read;
    EXPECT_FALSE(s.has("z")) << "no normaliser in the state";
    ASSERT_EQ(rec.size(), 1u);
    EXPECT_EQ(rec[0]["beta"].sizes(), (std::vector<int64_t>{2, 2, 40}));
    EXPECT_LT(max_abs_diff(rec[0]["beta"], torch::sigmoid(m.beta_proj(x)).transpose(1, 2)), 1e-12);
    // Float32 compute, float32 memory.
    auto m32 = make_mixer(7, Update::deltanet, torch::kFloat64, chunk, token_read);
    copy_params(m, m32);
    m32.to(torch::kFloat32);
    State s32;
    StepContext c32;
    auto y32 = m32.forward(x.to(torch::kFloat32), s32, c32);
    EXPECT_LT(max_abs_diff(y32, reference(m, x)), 1e-4);
    EXPECT_EQ(s32.at("M").scalar_type(), torch::kFloat32);
  }
}

TEST(DeltaNet, GradientsMatchCentralFiniteDifferences) {
  torch::manual_seed(23);
  // The update alone, through the feature map and the sigmoid: every input.
  const int64_t H = 2, T = 9, dk = 4, dv = 3;
  auto kraw = torch::randn({1, H, T, dk}, torch::kFloat64).requires_grad_(true);
  auto v = torch::randn({1, H, T, dv}, torch::kFloat64).requires_grad_(true);
  auto braw = torch::randn({1, H, T}, torch::kFloat64).requires_grad_(true);
  auto M0 = torch::randn({1, H, dk, dv}, torch::kFloat64).requires_grad_(true);
  auto R = torch::randn({1, H, dk, dv}, torch::kFloat64);
  auto loss = [&] {
    return (deltanet_memory_update(M0, deltanet_feature(kraw), v, torch::sigmoid(braw), 4) * R).sum();
  };
  loss().backward();
  for (auto* p : {&kraw, &v, &braw, &M0}) expect_grad_matches_fd(*p, p->grad().clone(), loss, 1, "update input");
  // The whole mixer, segments of 5 over 17 tokens (three memory updates): sampled entries of every
  // parameter, the write-strength projection and the gate included.
  for (int mode : {0, 1, 2, 3}) {
    const bool token_read = mode > 0;
    auto m = make_mixer(5, Update::deltanet, torch::kFloat64, 2, token_read, mode >= 2, mode == 3 ? 3 : 0);
    expect_mixer_grads_match_fd(m, "mode " + std::to_string(mode));
  }
}

TEST(DeltaNet, WindowLocalPathMatchesFloat64ReferenceAndIgnoresSegmentEdges) {
  torch::NoGradGuard ng;
  torch::manual_seed(27);
  auto m = make_mixer(7, Update::deltanet, torch::kFloat64, 3, true, true);
  auto x = torch::randn({2, 40, 16}, torch::kFloat64);
  State s;
  StepContext ctx;
  auto y = m.forward(x, s, ctx);
  EXPECT_LT(max_abs_diff(y, reference(m, x)), 1e-10);
  // Token by token gives the same, and the local cache stays at N - 1 tokens.
  State s1;
  std::vector<torch::Tensor> parts;
  for (int64_t t = 0; t < 40; ++t) parts.push_back(m.forward(x.narrow(1, t, 1), s1, ctx));
  EXPECT_LT(max_abs_diff(torch::cat(parts, 1), y), 1e-10);
  EXPECT_EQ(s1.at("k").size(2), 6);
  // The segment edge is invisible: the output at position 7 (a fresh segment for "segment")
  // differs from the segment-local mixer's, whose query there sees only itself.
  auto seg = make_mixer(7, Update::deltanet, torch::kFloat64, 3, true, false);
  copy_params(m, seg);
  State s2;
  auto ys = seg.forward(x, s2, ctx);
  EXPECT_LT(max_abs_diff(ys.narrow(1, 0, 7), y.narrow(1, 0, 7)), 1e-12);
  EXPECT_GT(max_abs_diff(ys.narrow(1, 7, 1), y.narrow(1, 7, 1)), 1e-4);
  ModelConfig c;
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "update": "deltanet", "local": "window"})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"cfg.json", "local", "token"});
}

TEST(DeltaNet, TokenReadIsTheCausalOutputOfTheRecurrence) {
  // deltanet_scan's o_t against the recurrence: write token t, then read q_t^T M_t.
  torch::NoGradGuard ng;
  torch::manual_seed(26);
  const int64_t T = 23, dk = 5, dv = 4;
  auto q = deltanet_feature(torch::randn({1, 2, T, dk}, torch::kFloat64));
  auto k = deltanet_feature(torch::randn({1, 2, T, dk}, torch::kFloat64));
  auto v = torch::randn({1, 2, T, dv}, torch::kFloat64);
  auto beta = torch::rand({1, 2, T}, torch::kFloat64);
  auto M0 = torch::randn({1, 2, dk, dv}, torch::kFloat64);
  for (int64_t chunk : {1, 5, 64}) {
    auto [O, M] = deltanet_scan(M0, q, k, v, beta, chunk);
    auto Mt = M0.clone();
    for (int64_t t = 0; t < T; ++t) {
      Mt = deltanet_loops(Mt, k.narrow(2, t, 1), v.narrow(2, t, 1), beta.narrow(2, t, 1));
      EXPECT_LT(max_abs_diff(O.narrow(2, t, 1), torch::matmul(q.narrow(2, t, 1), Mt)), 1e-12) << "t " << t;
    }
    EXPECT_LT(max_abs_diff(M, Mt), 1e-12);
  }
  // The config names the read mode; "token" needs the deltanet rule.
  Fields f(nlohmann::json::parse(R"({"update": "deltanet", "read": "token"})"), "cfg.json", "model.mixer");
  EXPECT_TRUE(InfiniAttentionOptions::parse(f, 16, 2, RopeOptions{}).token_read);
  ModelConfig c;
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "read": "token"})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"cfg.json", "read", "deltanet"});
}

TEST(DeltaNet, KeyWrittenOnceSurvivesAMillionPeriodicOrthogonalFillerKeys) {
  // One association (k0 -> v0), then 10^6 filler tokens whose keys repeat with period 61 and lie
  // in the subspace orthogonal to k0: each update (I - b k k^T) leaves k0's direction alone, so the
  // read k0^T M is unchanged, and the state's norm settles instead of growing.
  torch::NoGradGuard ng;
  torch::manual_seed(24);
  const int64_t dk = 16, dv = 16, P = 61, chunk = 64, block = 61 * 64 * 4;  // tokens per call
  auto k0 = torch::zeros({1, 1, 1, dk});
  k0[0][0][0][0] = 1;
  auto v0 = torch::randn({1, 1, 1, dv});
  auto M = deltanet_memory_update(torch::zeros({1, 1, dk, dv}), k0, v0, torch::full({1, 1, 1}, 0.9), chunk);
  auto read0 = torch::matmul(k0, M).clone();
  EXPECT_LT(max_abs_diff(read0, 0.9 * v0), 1e-6);
  auto fk = torch::randn({1, 1, P, dk});
  fk.select(3, 0).zero_();  // orthogonal to k0
  fk = fk / fk.norm(2, -1, true);
  auto fv = torch::randn({1, 1, P, dv});
  auto fb = torch::rand({1, 1, P}) * 0.98 + 0.01;
  const int64_t reps = block / P;
  auto K = fk.repeat({1, 1, reps, 1}), V = fv.repeat({1, 1, reps, 1}), Bt = fb.repeat({1, 1, reps});
  std::vector<double> norms;
  int64_t seen = 0;
  while (seen < 1000000) {
    M = deltanet_memory_update(M, K, V, Bt, chunk);
    seen += block;
    norms.push_back(M.norm().item<double>());
  }
  EXPECT_GE(seen, 1000000);
  EXPECT_LT(max_abs_diff(torch::matmul(k0, M), read0), 1e-5) << "the read of the written key after " << seen << " tokens";
  EXPECT_TRUE(std::isfinite(norms.back()));
  // Bounded: the norm after 10^6 tokens is within 1% of its value after the first block.
  EXPECT_LT(norms.back(), 1.01 * norms.front()) << "state norm grows: " << norms.front() << " -> " << norms.back();
  // A key not orthogonal to the filler is overwritten: the test can fail.
  auto k1 = fk.narrow(2, 0, 1).clone();
  auto M1 = deltanet_memory_update(torch::zeros({1, 1, dk, dv}), k1, v0, torch::full({1, 1, 1}, 0.9), chunk);
  M1 = deltanet_memory_update(M1, K.narrow(2, 0, 61 * 64), V.narrow(2, 0, 61 * 64), Bt.narrow(2, 0, 61 * 64), chunk);
  EXPECT_GT(max_abs_diff(torch::matmul(k1, M1), 0.9 * v0), 0.05);
}

TEST(DeltaNet, WriteStrengthLearnsAndConfigNamesTheRule) {
  torch::manual_seed(25);
  auto m = make_mixer(5, Update::deltanet, torch::kFloat32);
  auto x = torch::randn({2, 23, 16});
  State s;
  StepContext ctx;
  m.forward(x, s, ctx).pow(2).mean().backward();
  ASSERT_TRUE(m.beta_proj->weight.grad().defined());
  EXPECT_GT(m.beta_proj->weight.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(m.memory_gate.grad().abs().min().item<double>(), 0);
  Fields f(nlohmann::json::parse(R"({"update": "deltanet", "chunk": 32})"), "cfg.json", "model.mixer");
  auto o = InfiniAttentionOptions::parse(f, 16, 2, RopeOptions{});
  EXPECT_EQ(o.update, Update::deltanet);
  EXPECT_EQ(o.chunk, 32);
  ModelConfig c;
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "update": "deltanet", "chunk": 0})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"cfg.json", "chunk"});
}

TEST(DeltaNet, ShortConvolutionMatchesFloat64LoopsStreamsInAnyChunkingAndStartsAsTheIdentity) {
  torch::NoGradGuard ng;
  torch::manual_seed(28);
  // Random taps: the mixer against the plain-loop reference, segment and window local paths.
  for (bool window : {false, true}) {
    auto m = make_mixer(7, Update::deltanet, torch::kFloat64, 3, window, window, 4);
    auto x = torch::randn({2, 40, 16}, torch::kFloat64);
    State s;
    StepContext ctx;
    auto y = m.forward(x, s, ctx);
    EXPECT_LT(max_abs_diff(y, reference(m, x)), 1e-10) << "window " << window;
    EXPECT_EQ(s.at("qk_hist").sizes(), (std::vector<int64_t>{2, 3, 32}));
    // Pieces of 1, 2 and 5 tokens (shorter than the kernel included) give the same outputs.
    for (int64_t piece : {1, 2, 5}) {
      State sp;
      std::vector<torch::Tensor> parts;
      for (int64_t t = 0; t < 40; t += piece) parts.push_back(m.forward(x.narrow(1, t, std::min(piece, 40 - t)), sp, ctx));
      EXPECT_LT(max_abs_diff(torch::cat(parts, 1), y), 1e-10) << "pieces of " << piece << " window " << window;
    }
    // The taps matter: zeroing the earlier taps changes the output (the test can fail).
    auto m1 = make_mixer(7, Update::deltanet, torch::kFloat64, 3, window, window, 4);
    copy_params(m, m1);
    m1.qk_conv.narrow(1, 0, 3).zero_();
    State s1;
    EXPECT_GT(max_abs_diff(m1.forward(x, s1, ctx), y), 1e-4);
  }
  // At initialisation the convolution is the identity: the same outputs as the mixer without it.
  InfiniAttentionOptions o;
  o.d_model = 16, o.n_heads = 2, o.segment = 7, o.update = Update::deltanet, o.token_read = true, o.window_local = true;
  o.rope.dim = 8;
  InfiniAttentionMixer plain(o);
  o.qk_conv = 4;
  InfiniAttentionMixer conv(o);
  EXPECT_EQ(conv.qk_conv.sizes(), (std::vector<int64_t>{32, 4}));
  for (auto& p : plain.named_parameters()) conv.named_parameters()[p.key()].copy_(p.value());
  auto x = torch::randn({1, 30, 16});
  State a, b;
  StepContext ctx;
  EXPECT_LT(max_abs_diff(conv.forward(x, a, ctx), plain.forward(x, b, ctx)), 1e-6);
  // In a whole model too: the model's generic initialisation leaves the identity in place.
  ModelConfig c;
  c.d_model = 16, c.n_layers = 2, c.n_heads = 2, c.d_ff = 32;
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "update": "deltanet", "qk_conv": 4})");
  CausalLM lm(c);
  int convs = 0;
  for (auto& p : lm->named_parameters())
    if (p.key().find("qk_conv") != std::string::npos) {
      ++convs;
      EXPECT_EQ(p.value().select(1, 3).min().item<double>(), 1.0) << p.key();
      EXPECT_EQ(p.value().narrow(1, 0, 3).abs().max().item<double>(), 0.0) << p.key();
    }
  EXPECT_EQ(convs, 2);
  // The config: a kernel of >= 2 tokens, only with the deltanet rule.
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "update": "deltanet", "qk_conv": 1})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"cfg.json", "qk_conv", ">= 2"});
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "qk_conv": 4})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"cfg.json", "qk_conv", "deltanet"});
}

// ---- Gated DeltaNet's decay ("decay": true) ----

TEST(GatedDeltaNet, ChunkedUpdateAndOutputsMatchFloat64RecurrenceForEveryChunkSize) {
  torch::NoGradGuard ng;
  torch::manual_seed(31);
  const int64_t B = 2, H = 3, T = 41, dk = 6, dv = 5;
  auto q = deltanet_feature(torch::randn({B, H, T, dk}, torch::kFloat64));
  auto k = deltanet_feature(torch::randn({B, H, T, dk}, torch::kFloat64));
  auto v = torch::randn({B, H, T, dv}, torch::kFloat64);
  auto beta = torch::rand({B, H, T}, torch::kFloat64);
  // Decays from about 1 - 1e-4 to 0.05 per token, and one run of exact zeros' logs (alpha 1e-30):
  // a chunk's cumulative decay then underflows, which the form must survive.
  auto la = -torch::exp(torch::randn({B, H, T}, torch::kFloat64) * 2.0 - 3.0);
  la.select(2, 17).fill_(-69.0);
  for (bool incoming : {false, true}) {
    auto M0 = incoming ? torch::randn({B, H, dk, dv}, torch::kFloat64) : torch::zeros({B, H, dk, dv}, torch::kFloat64);
    auto ref = deltanet_loops(M0, k, v, beta, la);
    for (int64_t chunk : {1, 4, 7, 16, 41, 64}) {
      auto m64 = deltanet_memory_update(M0, k, v, beta, chunk, la);
      EXPECT_LT(max_abs_diff(m64, ref), 1e-12) << "chunk " << chunk << " incoming " << incoming;
      auto m32 = deltanet_memory_update(M0.to(torch::kFloat32), k.to(torch::kFloat32), v.to(torch::kFloat32),
                                        beta.to(torch::kFloat32), chunk, la.to(torch::kFloat32));
      EXPECT_LT(max_abs_diff(m32, ref), 1e-5) << "float32, chunk " << chunk << " incoming " << incoming;
      // The causal outputs: o_t = q_t^T M_t after token t's decay and write.
      auto [O, M] = deltanet_scan(M0, q, k, v, beta, chunk, la);
      EXPECT_LT(max_abs_diff(M, ref), 1e-12);
      auto Mt = M0.clone();
      for (int64_t t = 0; t < T; ++t) {
        Mt = deltanet_loops(Mt, k.narrow(2, t, 1), v.narrow(2, t, 1), beta.narrow(2, t, 1), la.narrow(2, t, 1));
        EXPECT_LT(max_abs_diff(O.narrow(2, t, 1), torch::matmul(q.narrow(2, t, 1), Mt)), 1e-12) << "t " << t;
      }
    }
  }
  // The decay matters (the test can fail): without it the state differs.
  EXPECT_GT(max_abs_diff(deltanet_memory_update(torch::zeros({B, H, dk, dv}, torch::kFloat64), k, v, beta, 8),
                         deltanet_loops(torch::zeros({B, H, dk, dv}, torch::kFloat64), k, v, beta, la)),
            1e-3);
}

TEST(GatedDeltaNet, MixerMatchesFloat64PlainLoopReferenceInEveryReadAndLocalMode) {
  torch::NoGradGuard ng;
  torch::manual_seed(32);
  struct Mode { int64_t chunk; bool token_read, window; int64_t conv; };
  for (auto md : std::vector<Mode>{{3, false, false, 0}, {64, false, false, 3}, {3, true, false, 0}, {5, true, true, 4}}) {
    auto m = make_mixer(7, Update::deltanet, torch::kFloat64, md.chunk, md.token_read, md.window, md.conv, true);
    auto x = torch::randn({2, 40, 16}, torch::kFloat64);
    State s;
    StepContext ctx;
    std::vector<std::map<std::string, torch::Tensor>> rec;
    ctx.record = &rec;
    auto y = m.forward(x, s, ctx);
    const std::string what = "chunk " + std::to_string(md.chunk) + " token_read " + std::to_string(md.token_read) +
                             " window " + std::to_string(md.window);
    EXPECT_LT(max_abs_diff(y, reference(m, x)), 1e-10) << what;
    ASSERT_TRUE(rec[0].count("log_alpha")) << what;
    EXPECT_LT(max_abs_diff(rec[0]["log_alpha"], -torch::exp(m.decay_proj(x)).transpose(1, 2)), 1e-12);
    // Streaming in pieces of 1, 6 and 11 tokens gives the same outputs.
    for (int64_t piece : {1, 6, 11}) {
      State sp;
      StepContext c2;
      std::vector<torch::Tensor> parts;
      for (int64_t t = 0; t < 40; t += piece) parts.push_back(m.forward(x.narrow(1, t, std::min(piece, 40 - t)), sp, c2));
      EXPECT_LT(max_abs_diff(torch::cat(parts, 1), y), 1e-10) << what << " pieces of " << piece;
    }
  }
}

TEST(GatedDeltaNet, GradientsMatchCentralFiniteDifferences) {
  torch::manual_seed(33);
  const int64_t H = 2, T = 11, dk = 4, dv = 3;
  auto kraw = torch::randn({1, H, T, dk}, torch::kFloat64).requires_grad_(true);
  auto v = torch::randn({1, H, T, dv}, torch::kFloat64).requires_grad_(true);
  auto braw = torch::randn({1, H, T}, torch::kFloat64).requires_grad_(true);
  auto araw = (torch::randn({1, H, T}, torch::kFloat64) - 1.0).requires_grad_(true);
  auto M0 = torch::randn({1, H, dk, dv}, torch::kFloat64).requires_grad_(true);
  auto q = deltanet_feature(torch::randn({1, H, T, dk}, torch::kFloat64));
  auto R = torch::randn({1, H, dk, dv}, torch::kFloat64), RO = torch::randn({1, H, T, dv}, torch::kFloat64);
  auto loss = [&] {
    auto [O, M] = deltanet_scan(M0, q, deltanet_feature(kraw), v, torch::sigmoid(braw), 4, -torch::exp(araw));
    return (M * R).sum() + (O * RO).sum();
  };
  loss().backward();
  for (auto* p : {&kraw, &v, &braw, &araw, &M0}) expect_grad_matches_fd(*p, p->grad().clone(), loss, 1, "scan input");
  // The whole mixer, the decay projection included, segment and window paths.
  for (bool window : {false, true}) {
    auto m = make_mixer(5, Update::deltanet, torch::kFloat64, 2, window, window, 0, true);
    expect_mixer_grads_match_fd(m, "window " + std::to_string(window));
  }
}

TEST(GatedDeltaNet, MemoryFedPeriodicTextSettlesToOneCycle) {
  // The property the decay is for: under a periodic input the state converges to a periodic
  // orbit, so the read after a period of filler stops changing; without a decay, filler keys in
  // directions the input barely excites keep moving the state over the same span.
  torch::NoGradGuard ng;
  torch::manual_seed(34);
  const int64_t dk = 8, dv = 4, P = 29, periods = 400, chunk = 64;
  // Filler keys that excite one direction weakly (scale 0.03), as a periodic text's keys do.
  auto raw = torch::randn({1, 1, P, dk}, torch::kFloat64);
  raw.select(3, 0).mul_(0.03);
  auto K1 = raw / raw.norm(2, -1, true);
  auto V1 = torch::randn({1, 1, P, dv}, torch::kFloat64);
  auto K = K1.repeat({1, 1, periods, 1}), V = V1.repeat({1, 1, periods, 1});
  auto Bt = torch::full({1, 1, P * periods}, 0.5, torch::kFloat64);
  auto la = torch::full({1, 1, P * periods}, std::log(1 - 2e-3), torch::kFloat64);
  auto M0 = torch::randn({1, 1, dk, dv}, torch::kFloat64) * 3.0;
  auto change = [&](const torch::Tensor& log_alpha) {  // ||M after period n+1 - M after period n||, at n = periods - 1
    auto Mn = deltanet_memory_update(M0, K.narrow(2, 0, P * (periods - 1)), V.narrow(2, 0, P * (periods - 1)),
                                     Bt.narrow(2, 0, P * (periods - 1)), chunk,
                                     log_alpha.defined() ? log_alpha.narrow(2, 0, P * (periods - 1)) : torch::Tensor());
    auto Mn1 = deltanet_memory_update(Mn, K1, V1, Bt.narrow(2, 0, P), chunk,
                                      log_alpha.defined() ? log_alpha.narrow(2, 0, P) : torch::Tensor());
    return (Mn1 - Mn).norm().item<double>() / Mn.norm().item<double>();
  };
  const double with_decay = change(la), without = change({});
  EXPECT_LT(with_decay, 1e-8) << "settled to a cycle";
  EXPECT_GT(without, 1e-6) << "the undecayed state still moves after " << periods << " periods";
}

TEST(GatedDeltaNet, StartsAtItsInitialDecayAndConfigNamesIt) {
  ModelConfig c;
  c.d_model = 16, c.n_layers = 2, c.n_heads = 2, c.d_ff = 32;
  c.mixer = nlohmann::json::parse(
      R"({"type": "infini_attention", "update": "deltanet", "read": "token", "local": "window", "decay": true, "decay_init": 1e-4})");
  CausalLM lm(ModelConfig::from_json(c.to_json(), "cfg.json"));
  int found = 0;
  for (auto& p : lm->named_parameters()) {
    if (p.key().find("decay_proj.weight") != std::string::npos) {
      ++found;
      EXPECT_EQ(p.value().abs().max().item<double>(), 0.0) << p.key();
    }
    if (p.key().find("decay_proj.bias") != std::string::npos) {
      EXPECT_NEAR(p.value().min().item<double>(), std::log(1e-4), 1e-6) << p.key();
    }
  }
  EXPECT_EQ(found, 2);
  // Every token then forgets 1e-4: 1 - exp(-exp(log 1e-4)).
  auto* m = dynamic_cast<InfiniAttentionMixer*>(lm->blocks[0]->mixer());
  ASSERT_NE(m, nullptr);
  State s;
  StepContext ctx;
  std::vector<std::map<std::string, torch::Tensor>> rec;
  ctx.record = &rec;
  m->forward(torch::randn({1, 9, 16}), s, ctx);
  EXPECT_NEAR((-rec[0]["log_alpha"]).max().item<double>(), 1e-4, 1e-9);
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "decay": true})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"cfg.json", "decay", "deltanet"});
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "update": "deltanet", "decay": true, "decay_init": 1.5})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"cfg.json", "decay_init", "(0, 1)"});
}
