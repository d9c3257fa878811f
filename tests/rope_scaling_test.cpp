// The RoPE-scaling family against values worked out from each formula (MECHANISMS.md section 8,
// Hugging Face's rope_scaling semantics), in float64, for a head dim of 64 and base 10000.
#include <cmath>

#include "model/lm.h"
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

TEST(RopeScaling, NHatKeepsTheFirstPositionsUnscaled) {
  RopeOptions o;
  o.dim = 16;
  Rope plain(o), scaled(o);
  scaled.set_scaling(torch::full({8}, 4.0, torch::kFloat64), 1.0, /*n_hat=*/8);
  auto pos = torch::arange(0, 20, torch::kInt64);
  auto a = scaled.angles(pos), p = plain.angles(pos);
  EXPECT_TRUE(torch::equal(a.narrow(0, 0, 8), p.narrow(0, 0, 8)));
  EXPECT_TRUE(torch::allclose(a.narrow(0, 8, 12), p.narrow(0, 8, 12) / 4.0));
}

namespace {
ModelConfig scaled_model(const char* scaling, const char* mixer = R"({"type": "full_attention"})",
                         double init_std = 0.02, int64_t layers = 2) {
  auto j = json::parse(R"({"d_model": 32, "n_heads": 2, "d_ff": 48})");
  j["n_layers"] = layers;
  j["init_std"] = init_std;
  j["mixer"] = json::parse(mixer);
  if (scaling) j["rope_scaling"] = json::parse(scaling);
  return ModelConfig::from_json(j, "model.json");
}
}  // namespace

TEST(RopeScaling, ModelConfigTakesHuggingFaceRopeScalingAndFactorOneChangesNothing) {
  torch::NoGradGuard ng;
  auto c = scaled_model(R"({"type": "linear", "factor": 1.0})");
  EXPECT_EQ(c.rope_scaling["rope_type"], "linear");  // stored normalised
  EXPECT_EQ(ModelConfig::from_json(c.to_json(), "again.json").to_json(), c.to_json());
  auto plain = scaled_model(nullptr);
  torch::manual_seed(4);
  CausalLM a(plain);
  torch::manual_seed(4);
  CausalLM b(c);
  auto x = torch::randint(0, 256, {1, 40});
  auto sa = a->new_state(), sb = b->new_state();
  EXPECT_TRUE(torch::equal(a->forward(x, sa), b->forward(x, sb)));
  expect_error([] { scaled_model(R"({"rope_type": "linear", "factor": 2.0})", R"({"type": "megalodon", "z_dim": 16, "v_dim": 32, "chunk": 8, "groups": 4})"); },
               {"model.json", "rope_scaling", "megalodon"});
}

TEST(RopeScaling, ACacheSpanningTheShortToLongSwitchIsReRotatedToMatchOneCall) {
  // LongRoPE with original length 16: a 40-token input in one call uses the long factors for
  // every key; streamed as 10 + 30 tokens, the first call rotates its keys with the short
  // factors, and the second (spanning 40 > 16) must re-rotate them. Dynamic NTK changes its
  // base with every call past the original length: the same must hold. One layer, so that the
  // cached keys depend on the tokens alone: deeper layers' keys of the first 10 tokens come
  // from hidden states computed under the short factors, which re-rotation does not redo
  // (docs/DESIGN-NOTES.md).
  torch::NoGradGuard ng;
  const char* cases[] = {
      R"({"rope_type": "longrope", "factor": 4.0, "original_max_position_embeddings": 16,
          "short_factor": [1.0, 1.0, 1.1, 1.2, 1.3, 1.5, 1.8, 2.0],
          "long_factor": [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0]})",
      R"({"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 16})",
  };
  // Large weights (init_std 0.3) so that positions matter to the outputs.
  for (auto sc : cases) {
    auto cfg = scaled_model(sc, R"({"type": "full_attention"})", 0.3, 1);
    torch::manual_seed(12);
    CausalLM m(cfg);
    auto x = torch::randint(0, 256, {2, 40});
    auto s1 = m->new_state();
    auto whole = m->forward(x, s1);
    auto s2 = m->new_state();
    m->forward(x.narrow(1, 0, 10), s2);
    auto tail = m->forward(x.narrow(1, 10, 30), s2);
    EXPECT_LT(max_abs_diff(tail, whole.narrow(1, 10, 30)), 1e-4) << sc;
    // And the next call continues the one-call cache exactly (no switch in between).
    auto more = torch::randint(0, 256, {2, 5});
    EXPECT_LT(max_abs_diff(m->forward(more, s2), m->forward(more, s1)), 1e-4) << sc;
  }
  // Without the switch (all calls within the original length) nothing is re-rotated: the short
  // factors hold, and they differ from the long ones (so the test above can fail).
  auto cfg = scaled_model(cases[0], R"({"type": "full_attention"})", 0.3);
  torch::manual_seed(12);
  CausalLM m(cfg);
  auto x = torch::randint(0, 256, {2, 40});
  auto s = m->new_state();
  auto short_out = m->forward(x.narrow(1, 0, 16), s);
  auto s1 = m->new_state();
  EXPECT_GT(max_abs_diff(short_out, m->forward(x, s1).narrow(1, 0, 16)), 1e-3);
}
