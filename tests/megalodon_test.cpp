// MEGALODON's parts against references computed another way (MECHANISMS.md section 2):
// CEMA's FFT path and its recurrence against a float64 loop over complex numbers, with and
// without an incoming state; CEMA's gradients against finite differences; TimestepNorm
// against its formula (statistics over every element seen so far) and streamed in pieces.
#include <cmath>
#include <complex>

#include "mixers/megalodon.h"
#include "model/lm.h"
#include "nn/timestep_norm.h"
#include "test_util.h"

using namespace longctx;
using namespace longctx::testing;
using cd = std::complex<double>;

namespace {

// CEMA with raw parameters spread so that some channels forget fast and some remember for
// thousands of steps (|q| up to ~0.998), which is what stresses the FFT's precision.
Cema make_cema(int64_t D, int64_t N, uint64_t seed) {
  torch::manual_seed(seed);
  Cema c(D, N);
  torch::NoGradGuard ng;
  c->alpha.uniform_(-4, 1);
  c->delta.uniform_(-4, 1);
  c->theta.uniform_(-3, 3);
  c->gamma.normal_(0, 1);
  c->omega.uniform_(-1, 1);
  return c;
}

// The recurrence, in complex float64, written from the formula: h_t = p x_t + q h_{t-1},
// y_t = Re(sum_n eta_n h_{t,n}) (no omega term). x [B, D, L]; h [B, D, N] complex in/out.
torch::Tensor naive_cema(const Cema& c, const torch::Tensor& x, std::vector<cd>& h) {
  const int64_t B = x.size(0), D = x.size(1), L = x.size(2), N = c->alpha.size(1);
  auto a = torch::sigmoid(c->alpha.to(torch::kFloat64)), d = torch::sigmoid(c->delta.to(torch::kFloat64));
  auto th = torch::sigmoid(c->theta.to(torch::kFloat64));
  auto g = c->gamma.to(torch::kFloat64);
  auto xa = x.accessor<double, 3>();
  auto y = torch::zeros({B, D, L}, torch::kFloat64);
  auto ya = y.accessor<double, 3>();
  const double pi2 = 2 * M_PI;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t ch = 0; ch < D; ++ch)
      for (int64_t n = 0; n < N; ++n) {
        double p = a[ch][n].item<double>();
        cd q = std::polar(1.0 - p * d[ch][n].item<double>(), double(n + 1) * th[ch].item<double>() * pi2 / double(N));
        cd eta = cd(g[ch][n][0].item<double>(), g[ch][n][1].item<double>()) / std::sqrt(double(N));
        cd& hh = h[(b * D + ch) * N + n];
        for (int64_t t = 0; t < L; ++t) {
          hh = p * xa[b][ch][t] + q * hh;
          ya[b][ch][t] += (eta * hh).real();
        }
      }
  return y;
}

double rel_err(const torch::Tensor& a, const torch::Tensor& ref) {
  return max_abs_diff(a.to(torch::kFloat64), ref) / ref.abs().max().item<double>();
}

}  // namespace

TEST(Cema, FftAndRecurrenceMatchFloat64LoopWithAndWithoutIncomingState) {
  torch::NoGradGuard ng;
  const int64_t B = 2, D = 3, N = 16;
  auto cema = make_cema(D, N, 1);
  for (int64_t L : {1, 2, 7, 64, 1000, 4096}) {
    for (bool with_state : {false, true}) {
      auto x = torch::randn({B, D, L}, torch::kFloat64);
      std::vector<cd> h(B * D * N, cd(0, 0));
      torch::Tensor h0r, h0i;
      if (with_state) {
        h0r = torch::randn({B, D, N}, torch::kFloat64) * 3;
        h0i = torch::randn({B, D, N}, torch::kFloat64) * 3;
        for (int64_t i = 0; i < B * D * N; ++i)
          h[i] = cd(h0r.view(-1)[i].item<double>(), h0i.view(-1)[i].item<double>());
      }
      auto ref = naive_cema(cema, x, h);
      auto href = torch::empty({B, D, N, 2}, torch::kFloat64);
      for (int64_t i = 0; i < B * D * N; ++i) {
        href.view({-1, 2})[i][0] = h[i].real();
        href.view({-1, 2})[i][1] = h[i].imag();
      }
      auto hscale = href.abs().max().item<double>();
      for (auto dt : {torch::kFloat32, torch::kFloat64}) {
        auto c = cema->coeffs(dt);
        auto xs = x.to(dt);
        auto s0r = with_state ? h0r.to(dt) : torch::Tensor(), s0i = with_state ? h0i.to(dt) : torch::Tensor();
        torch::Tensor fr, fi, rr, ri;
        auto yf = cema_fft(xs, c, s0r, s0i, &fr, &fi);
        auto yr = cema_recurrence(xs, c, s0r, s0i, &rr, &ri);
        const double tol = dt == torch::kFloat32 ? 1e-5 : 1e-10;
        std::string what = "L=" + std::to_string(L) + (with_state ? " with state" : "") +
                           (dt == torch::kFloat32 ? " float32" : " float64");
        EXPECT_LT(rel_err(yf, ref), tol) << "fft " << what;
        EXPECT_LT(rel_err(yr, ref), tol) << "recurrence " << what;
        // The handed-on state sums ~1/(1-|q|) ~ 500 float32 terms on the slowest channels: both
        // paths sit at ~4e-5 of its largest entry at L = 1000, so the state's float32 bound is 1e-4.
        const double stol = dt == torch::kFloat32 ? 1e-4 : 1e-10;
        EXPECT_LT(max_abs_diff(torch::stack({fr, fi}, -1).to(torch::kFloat64), href) / hscale, stol) << "fft state " << what;
        EXPECT_LT(max_abs_diff(torch::stack({rr, ri}, -1).to(torch::kFloat64), href) / hscale, stol)
            << "recurrence state " << what;
      }
    }
  }
}

TEST(Cema, GradientsMatchFiniteDifferences) {
  // Float64, a tiny case on the FFT path with an incoming state: d(sum(w * y))/d(parameter)
  // from autograd against central differences, for every parameter and the input.
  auto cema = make_cema(2, 3, 2);
  cema->to(torch::kFloat64);
  cema->recurrence_max = 0;  // FFT path
  auto x = torch::randn({1, 9, 2}, torch::kFloat64).requires_grad_(true);
  auto w = torch::randn({1, 9, 2}, torch::kFloat64);
  auto h0r = torch::randn({1, 2, 3}, torch::kFloat64), h0i = torch::randn({1, 2, 3}, torch::kFloat64);
  auto loss = [&]() {
    State s;
    s.set("cema_re", h0r);
    s.set("cema_im", h0i);
    auto y = cema->forward(x, s);
    // The handed-on state must carry gradients too.
    return (y * w).sum() + 0.3 * s.at("cema_re").sum() - 0.2 * s.at("cema_im").sum();
  };
  loss().backward();
  std::vector<std::pair<std::string, torch::Tensor>> params = {{"x", x}};
  for (auto& p : cema->named_parameters()) params.push_back({p.key(), p.value()});
  torch::NoGradGuard ng;
  for (auto& [name, p] : params) {
    auto g = p.grad();
    ASSERT_TRUE(g.defined()) << name;
    auto flat = p.view(-1);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      double orig = flat[i].item<double>(), eps = 1e-6;
      flat[i] = orig + eps;
      double up = loss().item<double>();
      flat[i] = orig - eps;
      double dn = loss().item<double>();
      flat[i] = orig;
      double fd = (up - dn) / (2 * eps);
      EXPECT_NEAR(g.view(-1)[i].item<double>(), fd, 1e-6 * std::max(1.0, std::abs(fd))) << name << "[" << i << "]";
    }
  }
}

TEST(Cema, InitialisationFollowsTheOfficialCode) {
  torch::manual_seed(3);
  const int64_t D = 64;
  Cema c(D, 16);
  // theta = logit(exp(-k ln D / D)) for k = 1..D, in some order.
  auto got = std::get<0>(torch::sort(torch::sigmoid(c->theta.to(torch::kFloat64))));
  auto k = torch::arange(1, D + 1, torch::kFloat64);
  auto want = std::get<0>(torch::sort(torch::exp(-k * std::log(double(D)) / double(D))));
  EXPECT_LT(max_abs_diff(got, want), 1e-6);
  EXPECT_FALSE(torch::equal(c->theta, std::get<0>(torch::sort(c->theta))));  // permuted
  EXPECT_EQ(c->gamma.select(-1, 1).abs().max().item<double>(), 0.0);
  EXPECT_LE(c->omega.abs().max().item<double>(), 1.0);
  EXPECT_NEAR(c->alpha.std().item<double>(), 0.2, 0.03);
}

namespace {

// Statistics over every element of the group in steps 0..t, the current step included.
torch::Tensor timestep_norm_reference(const torch::Tensor& x, int64_t G, double eps, const torch::Tensor& w,
                                      const torch::Tensor& b) {
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2), g = D / G;
  auto y = torch::zeros_like(x);
  for (int64_t bb = 0; bb < B; ++bb)
    for (int64_t gi = 0; gi < G; ++gi)
      for (int64_t t = 0; t < T; ++t) {
        auto seen = x[bb].narrow(0, 0, t + 1).narrow(1, gi * g, g);
        double mu = seen.mean().item<double>();
        double var = (seen - mu).pow(2).mean().item<double>();
        y[bb][t].narrow(0, gi * g, g).copy_((x[bb][t].narrow(0, gi * g, g) - mu) / std::sqrt(var + eps) *
                                                (1 + w.narrow(0, gi * g, g)) +
                                            b.narrow(0, gi * g, g));
      }
  return y;
}

}  // namespace

TEST(TimestepNorm, MatchesCumulativeStatisticsFormulaAndStreamsInAnyPieces) {
  torch::NoGradGuard ng;
  torch::manual_seed(4);
  const int64_t D = 12, G = 3;
  TimestepNorm n(D, G, 1e-5);
  n->to(torch::kFloat64);
  n->weight.uniform_(-0.5, 0.5);
  n->bias.uniform_(-0.5, 0.5);
  auto x = torch::randn({2, 40, D}, torch::kFloat64) * 3 + 5;  // non-zero mean on purpose
  auto ref = timestep_norm_reference(x, G, 1e-5, n->weight, n->bias);
  State s;
  EXPECT_LT(max_abs_diff(n(x, s), ref), 1e-10);
  EXPECT_EQ(s.counter("tsn_count"), 40);
  for (std::vector<int64_t> pieces : {std::vector<int64_t>{1, 1, 1, 37}, {13, 14, 13}, std::vector<int64_t>(40, 1)}) {
    State st;
    std::vector<torch::Tensor> outs;
    int64_t at = 0;
    for (auto p : pieces) {
      outs.push_back(n(x.narrow(1, at, p), st));
      at += p;
    }
    EXPECT_LT(max_abs_diff(torch::cat(outs, 1), ref), 1e-10);
  }
  // Float32 compute keeps float32 statistics and stays within float tolerance.
  TimestepNorm n32(D, G, 1e-5);
  n32->weight.copy_(n->weight);
  n32->bias.copy_(n->bias);
  State s32;
  auto y32 = n32(x.to(torch::kFloat32), s32);
  EXPECT_LT(max_abs_diff(y32, ref), 1e-4);
  EXPECT_EQ(s32.at("tsn_mean").scalar_type(), torch::kFloat32);
}

TEST(TimestepNorm, StatisticsStayAccurateOverAMillionSteps) {
  // One long stream fed in chunks of 4096 steps: the running mean and variance after 1M steps
  // equal those of all the data (float32 state, relative error 1e-4).
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  TimestepNorm n(8, 2);
  State s;
  double sum[2] = {0, 0}, sq[2] = {0, 0};
  const int64_t chunk = 4096, chunks = 256;
  for (int64_t i = 0; i < chunks; ++i) {
    auto x = torch::randn({1, chunk, 8}) * 2 + 7;
    n(x, s);
    auto xd = x.to(torch::kFloat64).view({chunk, 2, 4});
    for (int g = 0; g < 2; ++g) {
      sum[g] += xd.select(1, g).sum().item<double>();
      sq[g] += xd.select(1, g).pow(2).sum().item<double>();
    }
  }
  const double cnt = double(chunk * chunks * 4);
  for (int g = 0; g < 2; ++g) {
    double mu = sum[g] / cnt, var = sq[g] / cnt - mu * mu;
    EXPECT_NEAR(s.at("tsn_mean")[0][g].item<double>(), mu, 1e-4 * std::abs(mu));
    EXPECT_NEAR(s.at("tsn_var")[0][g].item<double>(), var, 1e-4 * var);
  }
  EXPECT_EQ(s.counter("tsn_count"), chunk * chunks);
}

TEST(Megalodon, ModelStreamsWithTheFinalTimestepNormInTheHeadState) {
  torch::NoGradGuard ng;
  torch::manual_seed(6);
  ModelConfig c;
  c.d_model = 32, c.n_layers = 2, c.n_heads = 2, c.d_ff = 48;
  c.mixer = nlohmann::json::parse(R"({"type": "megalodon", "z_dim": 16, "v_dim": 64, "chunk": 8, "groups": 4})");
  CausalLM m(c);
  auto names = m->named_parameters();
  EXPECT_TRUE(names.contains("model.layers.1.mega.cema.gamma"));
  EXPECT_TRUE(names.contains("model.norm.bias"));  // the final norm is a TimestepNorm
  EXPECT_TRUE(names.contains("model.layers.0.norm.weight"));
  // Norm scales are (1 + w) with w = 0 at initialisation; CEMA keeps its own initialisation.
  EXPECT_EQ(names["model.layers.0.mega.rmsnorm.weight"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(names["model.layers.0.mega.cema.gamma"].select(-1, 1).abs().max().item<double>(), 0.0);
  auto x = torch::randint(0, 256, {1, 30}, torch::kInt64);
  auto s = m->new_state();
  auto whole = m->forward(x, s);
  EXPECT_EQ(s.head.counter("norm_count"), 30);
  auto s2 = m->new_state();
  auto a = m->forward(x.narrow(1, 0, 11), s2);
  auto b = m->forward(x.narrow(1, 11, 19), s2);
  EXPECT_LT(max_abs_diff(torch::cat({a, b}, 1), whole), 1e-5);
}

TEST(Megalodon, TrainingRowsThatDropTheirStateGiveTheSameOutputsWithoutComputingIt) {
  torch::manual_seed(16);
  ModelConfig c;
  c.d_model = 32, c.n_layers = 2, c.n_heads = 2, c.d_ff = 48;
  c.mixer = nlohmann::json::parse(R"({"type": "megalodon", "z_dim": 16, "v_dim": 64, "chunk": 8, "groups": 4})");
  CausalLM m(c);
  auto x = torch::randint(0, 256, {2, 40}, torch::kInt64);
  auto kept = m->new_state();
  auto a = m->forward(x, kept, /*training=*/true);
  auto dropped = m->new_state();
  dropped.hand_on = false;
  auto b = m->forward(x, dropped, /*training=*/true);
  EXPECT_EQ(max_abs_diff(a, b), 0.0);
  EXPECT_TRUE(kept.layers[0].get("cema_re").defined());
  EXPECT_FALSE(dropped.layers[0].get("cema_re").defined());  // the hand-off was skipped
  b.sum().backward();  // and gradients still flow
  EXPECT_GT(m->named_parameters()["model.layers.0.mega.cema.alpha"].grad().abs().sum().item<double>(), 0.0);
}

TEST(Megalodon, AttentionStaysInsideItsChunk) {
  // With CEMA reduced to its pointwise omega term (gamma = 0), a token can reach later tokens
  // only through attention or the TimestepNorm statistics. Swapping two features of one group
  // at step 2 keeps that step's group mean and variance, so the statistics do not change:
  // what changes must come through attention, and stay inside chunk 0 (steps 0..4).
  torch::NoGradGuard ng;
  torch::manual_seed(7);
  MegalodonOptions o;
  o.d_model = 16, o.n_heads = 2, o.z_dim = 8, o.v_dim = 8, o.chunk = 5, o.groups = 2;
  MegalodonMixer m(o);
  m.to(torch::kFloat64);
  m.cema->gamma.zero_();
  auto x = torch::randn({1, 15, 16}, torch::kFloat64);
  auto x2 = x.clone();
  x2[0][2][0] = x[0][2][1];
  x2[0][2][1] = x[0][2][0];
  State s1, s2;
  StepContext ctx;
  auto y1 = m.forward(x, s1, ctx), y2 = m.forward(x2, s2, ctx);
  EXPECT_LT(max_abs_diff(y1.narrow(1, 0, 2), y2.narrow(1, 0, 2)), 1e-12);  // causal
  EXPECT_GT(max_abs_diff(y1.narrow(1, 3, 2), y2.narrow(1, 3, 2)), 1e-6);   // same chunk: attention
  EXPECT_LT(max_abs_diff(y1.narrow(1, 5, 10), y2.narrow(1, 5, 10)), 1e-12);  // later chunks: untouched
}

TEST(Megalodon, BadConfigIsRefusedByField) {
  ModelConfig c;
  c.n_heads = 4;
  c.mixer = nlohmann::json::parse(R"({"type": "megalodon", "z_dim": 12})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"cfg.json", "z_dim", "12"});
  c.mixer = nlohmann::json::parse(R"({"type": "megalodon", "groups": 7})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"groups"});
  c.mixer = nlohmann::json::parse(R"({"type": "megalodon", "chunk_size": 64})");
  expect_error([&] { ModelConfig::from_json(c.to_json(), "cfg.json"); }, {"chunk_size"});
}
