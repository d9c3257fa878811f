// The RoPE-scaling family against values worked out from each formula (MECHANISMS.md section 8,
// Hugging Face's rope_scaling semantics), in float64, for a head dim of 64 and base 10000.
#include <cmath>

#include "nn/rope.h"
#include "nn/rope_scaling.h"
#include "test_util.h"

using namespace longctx;
using namespace longctx::testing;
using nlohmann::json;

namespace {

RopeScaling parse(const char* s, int64_t max_pos = 0) { return RopeScaling::parse(json::parse(s), max_pos, "cfg.json"); }

double lam(const torch::Tensor& t, int64_t i) { return t[i].item<double>(); }

}  // namespace

TEST(RopeScaling, LinearDividesEveryFrequencyByTheFactor) {
  auto p = parse(R"({"rope_type": "linear", "factor": 4.0})").plan(64, 10000, 100);
  for (int64_t i : {0, 7, 31}) EXPECT_DOUBLE_EQ(lam(p.lambda, i), 4.0);
  EXPECT_DOUBLE_EQ(p.attention, 1.0);
}

TEST(RopeScaling, DynamicNtkChangesTheBaseOnlyPastTheOriginalLength) {
  auto s = parse(R"({"rope_type": "dynamic", "factor": 4.0, "original_max_position_embeddings": 512})");
  auto within = s.plan(64, 10000, 512);
  EXPECT_DOUBLE_EQ(lam(within.lambda, 31), 1.0);
  // len 2048: base' = 10000 (4 * 2048 / 512 - 3)^(64/62) = 10000 * 13^(32/31); lambda_i = 13^(2i/62)
  auto p = s.plan(64, 10000, 2048);
  EXPECT_NEAR(lam(p.lambda, 0), 1.0, 1e-12);
  EXPECT_NEAR(lam(p.lambda, 5), 1.5124056204417604, 1e-12);
  EXPECT_NEAR(lam(p.lambda, 17), 4.081992110005801, 1e-12);
  EXPECT_NEAR(lam(p.lambda, 31), 13.0, 1e-12);
}

TEST(RopeScaling, YarnRampsFromExtrapolationToInterpolationWithTemperature) {
  // factor 8, L 256: the ramp runs over dimensions floor(0.84) = 0 .. ceil(12.88) = 13;
  // inverse frequency = mix of theta/8 (weight ramp) and theta (weight 1 - ramp).
  auto p = parse(R"({"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 256})").plan(64, 10000, 4096);
  EXPECT_NEAR(lam(p.lambda, 0), 1.0, 1e-12);
  EXPECT_NEAR(lam(p.lambda, 5), 1.5072463768115942, 1e-12);   // 1 / (1 - 5/13 + (5/13)/8)
  EXPECT_NEAR(lam(p.lambda, 9), 2.5365853658536586, 1e-12);
  EXPECT_NEAR(lam(p.lambda, 12), 5.2, 1e-12);
  EXPECT_NEAR(lam(p.lambda, 17), 8.0, 1e-12);
  EXPECT_NEAR(lam(p.lambda, 31), 8.0, 1e-12);
  EXPECT_NEAR(p.attention, 0.1 * std::log(8.0) + 1, 1e-15);
  // An explicit attention_factor wins; the mscale ratio otherwise when both are given.
  EXPECT_DOUBLE_EQ(parse(R"({"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 256,
                             "attention_factor": 0.7})").plan(64, 10000, 1).attention, 0.7);
  auto m = parse(R"({"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 256, "mscale": 1.0,
                     "mscale_all_dim": 0.5})").plan(64, 10000, 1);
  EXPECT_NEAR(m.attention, (0.1 * std::log(8.0) + 1) / (0.05 * std::log(8.0) + 1), 1e-15);
}

TEST(RopeScaling, LongRopePicksShortOrLongFactorsByLengthWithItsAttentionScale) {
  std::vector<double> sf(32), lf(32);
  for (int i = 0; i < 32; ++i) sf[i] = 1.0 + 0.01 * i, lf[i] = 1.0 + 0.5 * i;
  json j = {{"rope_type", "longrope"}, {"short_factor", sf}, {"long_factor", lf},
            {"original_max_position_embeddings", 512}};
  auto s = RopeScaling::parse(j, 16384, "cfg.json");  // factor = 16384 / 512 = 32
  EXPECT_DOUBLE_EQ(s.factor, 32.0);
  auto shortp = s.plan(64, 10000, 512), longp = s.plan(64, 10000, 513);
  EXPECT_DOUBLE_EQ(lam(shortp.lambda, 10), 1.1);
  EXPECT_DOUBLE_EQ(lam(longp.lambda, 10), 6.0);
  // sqrt(1 + ln 32 / ln 512), in both regimes
  EXPECT_NEAR(shortp.attention, 1.247219128924647, 1e-12);
  EXPECT_NEAR(longp.attention, 1.247219128924647, 1e-12);
}

TEST(RopeScaling, FactorOneIsPlainRopeExactly) {
  torch::manual_seed(1);
  RopeOptions o;
  o.dim = 16;
  Rope plain(o), scaled(o);
  auto p = parse(R"({"rope_type": "linear", "factor": 1.0})").plan(16, o.base, 64);
  scaled.set_scaling(p.lambda, p.attention);
  auto x = torch::randn({2, 3, 64, 16});
  auto pos = torch::arange(1000, 1064, torch::kInt64);
  EXPECT_TRUE(torch::equal(plain.apply(x, pos), scaled.apply(x, pos)));
  // A scaled rope rotates position n by n * theta_i / lambda_i.
  auto lin = parse(R"({"rope_type": "linear", "factor": 4.0})").plan(16, o.base, 64);
  scaled.set_scaling(lin.lambda, lin.attention);
  auto pos4 = torch::arange(1000, 1064, torch::kInt64) * 4;
  EXPECT_LT(max_abs_diff(scaled.apply(x, pos4), plain.apply(x, pos)), 1e-5);
}

TEST(RopeScaling, HuggingFaceConfigRoundTripAndErrorsNameTheField) {
  const char* cfgs[] = {
      R"({"rope_type": "linear", "factor": 2.0})",
      R"({"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 128})",
      R"({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256, "beta_fast": 16.0, "beta_slow": 2.0})",
      R"({"rope_type": "longrope", "factor": 8.0, "original_max_position_embeddings": 64, "short_factor": [1.0, 1.1], "long_factor": [2.0, 3.0], "n_hat": 4})",
  };
  for (auto c : cfgs) {
    auto a = parse(c);
    auto b = RopeScaling::parse(a.to_json(), 0, "again.json");
    EXPECT_EQ(a.to_json(), b.to_json()) << c;
  }
  // Older HF configs say "type".
  EXPECT_EQ(parse(R"({"type": "linear", "factor": 3.0})").type, "linear");
  expect_error([] { parse(R"({"rope_type": "ntk", "factor": 2.0})"); }, {"cfg.json", "rope_type", "ntk"});
  expect_error([] { parse(R"({"rope_type": "linear"})"); }, {"factor"});
  expect_error([] { parse(R"({"rope_type": "yarn", "factor": 2.0})"); }, {"original_max_position_embeddings"});
  expect_error([] { parse(R"({"rope_type": "linear", "factor": 2.0, "fator": 1})"); }, {"fator"});
  expect_error([] {
    parse(R"({"rope_type": "longrope", "original_max_position_embeddings": 64, "short_factor": [1.0], "long_factor": [1.0, 2.0]})", 128);
  }, {"long_factor"});
}
