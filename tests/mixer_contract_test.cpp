// The three contracts of DESIGN.md, checked for every mixer configuration listed here.
// A new mechanism adds its configurations to kMixers.
#include <random>

#include "io/safetensors.h"
#include "model/lm.h"
#include "test_util.h"

using namespace longctx;
using namespace longctx::testing;
using nlohmann::json;

namespace {

struct MixerCase {
  const char* name;
  const char* mixer_json;
  bool bounded;
};

const MixerCase kMixers[] = {
    {"full_attention", R"({"type": "full_attention"})", false},
    {"full_attention_small_blocks", R"({"type": "full_attention", "q_block": 7})", false},
    {"sliding_window", R"({"type": "sliding_window", "window": 16})", true},
    {"sliding_window_sinks", R"({"type": "sliding_window", "window": 16, "sinks": 4, "q_block": 5})", true},
    {"sliding_window_gqa", R"({"type": "sliding_window", "window": 9, "sinks": 1, "n_kv_heads": 2})", true},
    {"full_attention_gqa_headdim_bias", R"({"type": "full_attention", "n_kv_heads": 1, "head_dim": 12, "qkv_bias": true})", false},
    {"infini_delta", R"({"type": "infini_attention", "segment": 16})", true},
    {"infini_linear", R"({"type": "infini_attention", "segment": 13, "update": "linear"})", true},
    {"infini_deltanet", R"({"type": "infini_attention", "segment": 16, "update": "deltanet", "chunk": 5})", true},
    {"infini_deltanet_odd", R"({"type": "infini_attention", "segment": 13, "update": "deltanet", "detach_every": 2})", true},
    {"infini_deltanet_token", R"({"type": "infini_attention", "segment": 11, "update": "deltanet", "read": "token", "chunk": 4})", true},
    {"infini_deltanet_window", R"({"type": "infini_attention", "segment": 12, "update": "deltanet", "read": "token", "local": "window", "chunk": 5, "detach_every": 1})", true},
    {"infini_deltanet_conv", R"({"type": "infini_attention", "segment": 12, "update": "deltanet", "read": "token", "local": "window", "chunk": 5, "qk_conv": 4})", true},
    {"infini_deltanet_conv_segment", R"({"type": "infini_attention", "segment": 9, "update": "deltanet", "qk_conv": 3})", true},
    {"infini_deltanet_decay", R"({"type": "infini_attention", "segment": 12, "update": "deltanet", "read": "token", "local": "window", "chunk": 5, "qk_conv": 4, "decay": true, "decay_init": 0.05})", true},
    {"infini_deltanet_decay_segment", R"({"type": "infini_attention", "segment": 9, "update": "deltanet", "chunk": 4, "decay": true, "decay_init": 0.05})", true},
    {"infini_detach", R"({"type": "infini_attention", "segment": 7, "detach_every": 2, "gate_init": 1.5})", true},
    {"megalodon", R"({"type": "megalodon", "z_dim": 16, "v_dim": 32, "chunk": 16, "groups": 4, "ndim": 4})", true},
    {"bswa", R"({"type": "bswa", "block": 16, "memory_blocks": 2})", true},
    {"bswa_m0", R"({"type": "bswa", "block": 9, "memory_blocks": 0})", true},
    {"fam", R"({"type": "fam", "block": 16, "memory_blocks": 1, "fam_tokens": 4, "state_passing": 0, "position_offset": false})", true},
    {"fam_m0", R"({"type": "fam", "block": 11, "memory_blocks": 0, "fam_tokens": 3, "state_passing": 0, "position_offset": false})", true},
    {"beacon", R"({"type": "activation_beacon", "window": 16, "ratios": [4]})", false},
    {"beacon_segment", R"({"type": "activation_beacon", "window": 12, "ratios": [3], "attend": "segment", "q_block": 5})", false},
    {"beacon_full_one", R"({"type": "activation_beacon", "window": 9, "ratios": [9], "attend": "full"})", false},
    {"beacon_gqa_headdim_bias", R"({"type": "activation_beacon", "window": 12, "ratios": [3], "n_kv_heads": 2, "head_dim": 6, "qkv_bias": true})", false},
    {"beacon_off", R"({"type": "activation_beacon", "window": 16, "ratios": [4], "beacons": false})", false},
    {"megalodon_chunk7", R"({"type": "megalodon", "z_dim": 8, "v_dim": 48, "chunk": 7, "groups": 8})", true},
};

class MixerContract : public ::testing::TestWithParam<MixerCase> {
 protected:
  void SetUp() override {
    ModelConfig c;
    c.d_model = 32;
    c.n_layers = 2;
    c.n_heads = 4;
    c.d_ff = 64;
    c.mixer = json::parse(GetParam().mixer_json);
    torch::manual_seed(11);
    model = CausalLM(c);
    model->eval();
    {  // Parameters that start as the identity (DeltaNet's short convolution) get random values, so
       // the history they read across pieces matters here.
      torch::NoGradGuard ng;
      for (auto& p : model->named_parameters())
        if (p.key().find("qk_conv") != std::string::npos || p.key().find("decay_proj.weight") != std::string::npos)
          p.value().normal_(0, 0.5);
    }
    tokens = torch::randint(0, 256, {2, kLen}, torch::kInt64);
  }
  torch::Tensor run_chunks(const std::vector<int64_t>& sizes, ModelState& st, int64_t from = 0) {
    std::vector<torch::Tensor> outs;
    int64_t i = from;
    for (auto n : sizes) {
      outs.push_back(model->forward(tokens.narrow(1, i, n), st));
      i += n;
    }
    return torch::cat(outs, 1);
  }
  static constexpr int64_t kLen = 150;
  CausalLM model{nullptr};
  torch::Tensor tokens;
};

std::vector<int64_t> random_split(int64_t total, std::mt19937& rng, int64_t max_chunk) {
  std::vector<int64_t> v;
  while (total > 0) {
    int64_t n = std::min<int64_t>(total, 1 + rng() % max_chunk);
    v.push_back(n);
    total -= n;
  }
  return v;
}

}  // namespace

TEST_P(MixerContract, StreamingEquivalenceAnyChunkingAndTokenByToken) {
  torch::NoGradGuard ng;
  auto st = model->new_state();
  auto whole = model->forward(tokens, st);
  std::mt19937 rng(5);
  for (int trial = 0; trial < 4; ++trial) {
    auto s = model->new_state();
    auto got = run_chunks(random_split(kLen, rng, trial < 2 ? 40 : 7), s);
    EXPECT_LT(max_abs_diff(got, whole), 1e-5) << "random chunking " << trial;
  }
  auto s = model->new_state();
  auto tbt = run_chunks(std::vector<int64_t>(kLen, 1), s);
  EXPECT_LT(max_abs_diff(tbt, whole), 1e-5) << "token by token";
}

TEST_P(MixerContract, StreamingEquivalenceUnderAutogradWithGradients) {
  auto st = model->new_state();
  auto whole = model->forward(tokens, st, true);
  auto s = model->new_state();
  std::mt19937 rng(6);
  auto got = run_chunks(random_split(kLen, rng, 33), s);
  EXPECT_LT(max_abs_diff(got, whole), 1e-5);
  got.pow(2).mean().backward();
  // Every weight matrix of the first layer receives a gradient.
  int matrices = 0;
  for (auto& p : model->named_parameters()) {
    if (p.key().rfind("model.layers.0.", 0) != 0 || p.value().dim() < 2) continue;
    // With beacons off, Activation Beacon's own projections are not used.
    if (std::string(GetParam().name) == "beacon_off" && p.key().find("beacon_") != std::string::npos) continue;
    ++matrices;
    auto g = p.value().grad();
    ASSERT_TRUE(g.defined()) << p.key();
    EXPECT_GT(g.abs().sum().item<double>(), 0) << p.key();
  }
  EXPECT_GE(matrices, 4);
}

TEST_P(MixerContract, BoundedStateOrGrowthAsDeclared) {
  torch::NoGradGuard ng;
  auto s = model->new_state();
  run_chunks({60}, s);
  int64_t b60 = s.bytes();
  run_chunks({45, 45}, s, 60);
  int64_t b150 = s.bytes();
  EXPECT_EQ(model->blocks[0]->mixer()->state_bounded(), GetParam().bounded);
  if (GetParam().bounded) {
    EXPECT_EQ(b60, b150);
  } else {
    EXPECT_GT(b150, b60);
  }
}

TEST_P(MixerContract, StateRoundTripContinuesExactly) {
  torch::NoGradGuard ng;
  auto s = model->new_state();
  auto ref = run_chunks({37, 1, 30, 82}, s);
  auto s1 = model->new_state();
  auto first = run_chunks({37, 1, 30}, s1);
  auto dir = temp_dir(std::string("state_") + GetParam().name);
  save_state(dir + "/s.safetensors", s1, model->config());
  auto s2 = load_state(dir + "/s.safetensors", *model);
  EXPECT_EQ(s2.bytes(), s1.bytes());
  EXPECT_EQ(s2.tokens, 68);
  auto rest = run_chunks({82}, s2, 68);
  EXPECT_LT(max_abs_diff(torch::cat({first, rest}, 1), ref), 1e-6);
  // The original keeps going too (saving did not disturb it), and a clone is independent.
  auto s3 = s1.clone();
  auto r1 = run_chunks({82}, s1, 68);
  auto r3 = run_chunks({82}, s3, 68);
  EXPECT_TRUE(torch::equal(r1, r3));
}

TEST_P(MixerContract, CloneIsIndependentOfTheOriginalInBothDirections) {
  // A clone fed other tokens (in other pieces, token by token too) leaves the original's
  // continuation bit for bit what it is without the clone, and the other way round.
  torch::NoGradGuard ng;
  auto other = torch::randint(0, 256, {2, 60}, torch::kInt64);
  auto feed_other = [&](ModelState& st) {
    int64_t i = 0;
    for (int64_t n : {1, 1, 13, 45}) model->forward(other.narrow(1, i, n), st), i += n;
  };
  auto ref = model->new_state();
  run_chunks({70}, ref);
  auto ref_rest = run_chunks({3, 77}, ref, 70);

  auto a = model->new_state();
  run_chunks({70}, a);
  auto b = a.clone();
  feed_other(b);  // the clone first, then the original
  EXPECT_TRUE(torch::equal(run_chunks({3, 77}, a, 70), ref_rest));

  auto c = model->new_state();
  run_chunks({70}, c);
  auto d = c.clone();
  run_chunks({3, 77}, c, 70);  // the original first, then the clone
  auto other_ref = model->new_state();
  run_chunks({70}, other_ref);
  feed_other(other_ref);
  auto e = other_ref.clone();
  feed_other(d);
  EXPECT_EQ(d.tokens, e.tokens);
  auto x = torch::randint(0, 256, {2, 5}, torch::kInt64);
  EXPECT_TRUE(torch::equal(model->forward(x, d), model->forward(x, e)));
}

TEST_P(MixerContract, AFailedStepLeavesEveryLayerAsItWas) {
  // The last layer's state is made unusable (every tensor one column short), so a step fails in
  // that layer after the first has run. The step must leave the first layer (and the token
  // count) as they were: repaired, the state continues exactly as one that never failed.
  torch::NoGradGuard ng;
  auto ref = model->new_state();
  run_chunks({70}, ref);
  auto st = ref.clone();
  auto& last = st.layers.back();
  int corrupted = 0;
  for (auto& [name, t] : std::map<std::string, torch::Tensor>(last.tensors())) {
    if (t.defined() && t.dim() >= 2 && t.size(-1) > 1) last.set(name, t.narrow(-1, 0, t.size(-1) - 1)), ++corrupted;
  }
  ASSERT_GT(corrupted, 0);
  EXPECT_ANY_THROW(run_chunks({29}, st, 70));
  EXPECT_EQ(st.tokens, 70);
  // Every field of layer 0 as it was. A segment buffer (a field with a length of kAny) may differ
  // in its slots past the fill, which are not content (a call that began with an empty segment
  // overwrites them in place); its content is checked by the exact continuation below.
  std::map<std::string, bool> buffer;
  for (auto& f : model->layer_schema(0))
    for (auto d : f.shape) buffer[f.name] = buffer[f.name] || d == StateField::kAny;
  for (auto& [name, t] : ref.layers[0].tensors()) {
    ASSERT_TRUE(st.layers[0].has(name)) << name;
    EXPECT_EQ(st.layers[0].at(name).sizes(), t.sizes()) << name;
    if (!buffer[name] || t.dim() == 0) {
      EXPECT_TRUE(torch::equal(st.layers[0].at(name), t)) << "layer 0 field '" << name << "' changed by a failed step";
    }
  }
  EXPECT_EQ(st.layers[0].tensors().size(), ref.layers[0].tensors().size());
  st.layers.back() = ref.layers.back().clone();
  EXPECT_TRUE(torch::equal(run_chunks({29, 51}, st, 70), run_chunks({29, 51}, ref, 70)));
}

TEST_P(MixerContract, EveryFieldWrittenIsDeclaredInTheSchema) {
  // After every call (any chunking, token by token, under autograd), each layer's state holds
  // only fields the mechanism declares, with the declared shapes, dtypes and one batch.
  std::mt19937 rng(9);
  auto check = [&](const ModelState& st, const std::string& when) {
    int64_t batch = -1;
    for (size_t i = 0; i < st.layers.size(); ++i)
      EXPECT_NO_THROW(check_state(st.layers[i], model->layer_schema(int64_t(i)), when, "layers." + std::to_string(i) + ".",
                                  GetParam().name, batch))
          << when;
    EXPECT_NO_THROW(check_state(st.head, model->head_schema(), when, "head.", GetParam().name, batch)) << when;
    EXPECT_EQ(batch, 2) << when;
  };
  {
    torch::NoGradGuard ng;
    for (int trial = 0; trial < 2; ++trial) {
      auto st = model->new_state();
      int64_t i = 0;
      for (auto n : random_split(kLen, rng, trial == 0 ? 40 : 3)) {
        model->forward(tokens.narrow(1, i, n), st);
        i += n;
        check(st, "after " + std::to_string(i) + " tokens, trial " + std::to_string(trial));
      }
    }
  }
  auto st = model->new_state();
  int64_t i = 0;
  for (auto n : random_split(kLen, rng, 50)) {
    model->forward(tokens.narrow(1, i, n), st, /*training=*/true);
    i += n;
    check(st, "under autograd after " + std::to_string(i) + " tokens");
  }
}

TEST_P(MixerContract, ASavedStateThatBreaksTheSchemaIsRefusedNamingTheField) {
  torch::NoGradGuard ng;
  auto st = model->new_state();
  run_chunks({70}, st);
  auto dir = temp_dir(std::string("state_schema_") + GetParam().name);
  save_state(dir + "/s.safetensors", st, model->config());
  auto f = load_safetensors(dir + "/s.safetensors");
  // A floating field one column short, and a field the mechanism does not have.
  std::string victim;
  auto short_one = f.tensors;
  for (auto& [n, t] : short_one)
    if (victim.empty() && n.rfind("layers.1.", 0) == 0 && t.dim() >= 2 && t.is_floating_point())
      victim = n, t = t.narrow(-1, 0, t.size(-1) - 1).contiguous();
  ASSERT_FALSE(victim.empty());
  save_safetensors(dir + "/short.safetensors", short_one, f.metadata);
  expect_error([&] { load_state(dir + "/short.safetensors", *model); }, {"short.safetensors", "'" + victim + "'", "declares"});
  auto extra = f.tensors;
  extra.push_back({"layers.0.bogus", torch::zeros({2, 3})});
  save_safetensors(dir + "/extra.safetensors", extra, f.metadata);
  expect_error([&] { load_state(dir + "/extra.safetensors", *model); }, {"'layers.0.bogus'", "is not part of"});
  // Batches that disagree between fields.
  auto mixed = f.tensors;
  for (auto& [n, t] : mixed)
    if (n == victim) t = t.narrow(0, 0, 1).contiguous();
  save_safetensors(dir + "/mixed.safetensors", mixed, f.metadata);
  expect_error([&] { load_state(dir + "/mixed.safetensors", *model); }, {"mixed.safetensors", "with B = 2"});
  // The untouched file loads.
  EXPECT_NO_THROW(load_state(dir + "/s.safetensors", *model));
}

TEST_P(MixerContract, StateOfAnotherConfigIsRefusedByName) {
  torch::NoGradGuard ng;
  auto s = model->new_state();
  run_chunks({10}, s);
  auto dir = temp_dir(std::string("state_ref_") + GetParam().name);
  save_state(dir + "/s.safetensors", s, model->config());
  ModelConfig other = model->config();
  other.d_ff = 96;
  expect_error([&] { load_state(dir + "/s.safetensors", other); }, {"config hash"});
}

INSTANTIATE_TEST_SUITE_P(AllMixers, MixerContract, ::testing::ValuesIn(kMixers),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(SlidingWindow, EqualsFullAttentionWithinTheWindow) {
  torch::NoGradGuard ng;
  ModelConfig c;
  c.d_model = 32, c.n_layers = 2, c.n_heads = 4, c.d_ff = 64;
  torch::manual_seed(1);
  CausalLM full(c);
  c.mixer = json::parse(R"({"type": "sliding_window", "window": 64})");
  CausalLM sw(c);
  torch::manual_seed(1);
  CausalLM tmp(c);  // same init sequence as `full`
  {
    auto src = full->named_parameters();
    for (auto& p : sw->named_parameters()) p.value().copy_(src[p.key()]);
  }
  auto x = torch::randint(0, 256, {1, 64}, torch::kInt64);
  auto a = full->new_state(), b = sw->new_state();
  EXPECT_LT(max_abs_diff(full->forward(x, a), sw->forward(x, b)), 1e-6);
}

TEST(SlidingWindow, MemoryOfTheDistantPastIsGoneExceptSinks) {
  // Changing a token outside the window (and not a sink) must not change the output.
  torch::NoGradGuard ng;
  ModelConfig c;
  c.d_model = 32, c.n_layers = 1, c.n_heads = 4, c.d_ff = 64;
  c.mixer = json::parse(R"({"type": "sliding_window", "window": 8, "sinks": 2})");
  torch::manual_seed(2);
  CausalLM m(c);
  auto x = torch::randint(0, 256, {1, 40}, torch::kInt64);
  auto y = x.clone();
  y[0][10] = (y[0][10].item<int64_t>() + 1) % 256;  // one layer: receptive field = window
  auto s1 = m->new_state(), s2 = m->new_state();
  auto a = m->forward(x, s1), b = m->forward(y, s2);
  EXPECT_LT(max_abs_diff(a.narrow(1, 18, 22), b.narrow(1, 18, 22)), 1e-6);
  EXPECT_GT(max_abs_diff(a.narrow(1, 10, 8), b.narrow(1, 10, 8)), 1e-4);
  auto z = x.clone();
  z[0][1] = (z[0][1].item<int64_t>() + 1) % 256;  // a sink: seen forever
  auto s3 = m->new_state();
  EXPECT_GT(max_abs_diff(m->forward(z, s3).narrow(1, 30, 10), a.narrow(1, 30, 10)), 1e-5);
}
