// Activation Beacon (MECHANISMS.md section 7) against a float64 reference written the paper's
// way: every window is one sequence [x_1..x_l, b_1..b_k] through every layer with one masked
// attention, the projections chosen per row; plus the mask as a table, beacons off = the base
// model bit for bit, the state's growth, the ratio choice and which parameters train.
#include <cmath>
#include <random>
#include <set>

#include "mixers/activation_beacon.h"
#include "model/lm.h"
#include "model/pretrained.h"
#include "test_util.h"
#include "train/optim.h"

using namespace longctx;
using namespace longctx::testing;
using nlohmann::json;

namespace {

ModelConfig config(const std::string& mixer) {
  ModelConfig c;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.d_ff = 64;
  c.mixer = json::parse(mixer);
  return c;
}

// Rotate-halves RoPE written out: x [H, n, d] at positions pos.
torch::Tensor rot(const torch::Tensor& x, const std::vector<int64_t>& pos, double base = 10000) {
  const int64_t d = x.size(2);
  auto out = x.clone();
  for (size_t t = 0; t < pos.size(); ++t)
    for (int64_t i = 0; i < d / 2; ++i) {
      double th = double(pos[t]) * std::pow(base, -2.0 * i / double(d));
      auto a = x.select(1, t).select(1, i), b = x.select(1, t).select(1, i + d / 2);
      out.select(1, t).select(1, i).copy_(a * std::cos(th) - b * std::sin(th));
      out.select(1, t).select(1, i + d / 2).copy_(b * std::cos(th) + a * std::sin(th));
    }
  return out;
}

// The logits [T, V] of `tokens` [T] read window by window, as the paper describes it.
torch::Tensor reference_logits(CausalLM& model, const torch::Tensor& tokens, int64_t l, int64_t alpha,
                               const std::string& attend) {
  torch::NoGradGuard ng;
  const auto& c = model->config();
  const int64_t D = c.d_model, H = c.n_heads, dh = D / H, T = tokens.size(0), L = c.n_layers;
  auto heads = [&](const torch::Tensor& y) { return y.view({-1, H, dh}).transpose(0, 1); };  // [n, D] -> [H, n, dh]
  std::vector<torch::Tensor> memK(L), memV(L);
  std::vector<torch::Tensor> logits;
  auto* first = dynamic_cast<BeaconMixer*>(model->blocks[0]->mixer());
  for (int64_t w0 = 0; w0 < T; w0 += l) {
    const int64_t len = std::min(l, T - w0), kb = len == l ? l / alpha : 0;
    auto X = model->model->embed_tokens(tokens.narrow(0, w0, len));
    if (kb) X = torch::cat({X, first->beacon_embed.view({1, D}).expand({kb, D})}, 0);
    for (int64_t li = 0; li < L; ++li) {
      auto& blk = dynamic_cast<PreNormBlock&>(*model->blocks[li]);
      auto& mx = dynamic_cast<BeaconMixer&>(*blk.self_attn);
      const int64_t m = memK[li].defined() ? memK[li].size(1) : 0;
      auto n = blk.input_layernorm(X);
      auto nr = n.narrow(0, 0, len), nb = n.narrow(0, len, kb);
      auto Q = heads(torch::cat({mx.q_proj(nr), mx.beacon_q_proj(nb)}, 0));
      auto K = heads(torch::cat({mx.k_proj(nr), mx.beacon_k_proj(nb)}, 0));
      auto V = heads(torch::cat({mx.v_proj(nr), mx.beacon_v_proj(nb)}, 0));
      std::vector<int64_t> pos;
      for (int64_t r = 0; r < len; ++r) pos.push_back(m + r);
      for (int64_t j = 1; j <= kb; ++j) pos.push_back(m + j * alpha);
      auto Qr = rot(Q, pos), Kr = rot(K, pos);
      auto keys = m ? torch::cat({memK[li], Kr}, 1) : Kr, vals = m ? torch::cat({memV[li], V}, 1) : V;
      auto mask = torch::zeros({len + kb, m + len + kb}, torch::kBool);
      for (int64_t r = 0; r < len; ++r)
        for (int64_t s = 0; s < m + r + 1; ++s) mask[r][s] = true;  // memory, raw 0..r
      for (int64_t j = 0; j < kb; ++j) {
        for (int64_t s = 0; s < m; ++s) mask[len + j][s] = true;
        for (int64_t r = 0; r < len; ++r) {
          bool sees = attend == "full" || (attend == "step" && r < (j + 1) * alpha) ||
                      (attend == "segment" && r >= j * alpha && r < (j + 1) * alpha);
          mask[len + j][m + r] = sees;
        }
        mask[len + j][m + len + j] = true;
      }
      auto scores = torch::matmul(Qr, keys.transpose(1, 2)) / std::sqrt(double(dh));
      scores = scores.masked_fill(mask.logical_not(), -INFINITY);
      auto y = torch::matmul(torch::softmax(scores, -1), vals).transpose(0, 1).reshape({len + kb, D});
      auto O = torch::cat({mx.o_proj(y.narrow(0, 0, len)), mx.beacon_o_proj(y.narrow(0, len, kb))}, 0);
      auto A = X + O;
      X = A + blk.mlp(blk.post_attention_layernorm(A));
      if (kb) {  // the beacons' keys join the memory at slots m .. m + kb - 1
        std::vector<int64_t> slots;
        for (int64_t j = 0; j < kb; ++j) slots.push_back(m + j);
        auto kmem = rot(K.narrow(1, len, kb), slots);
        memK[li] = m ? torch::cat({memK[li], kmem}, 1) : kmem;
        memV[li] = m ? torch::cat({memV[li], V.narrow(1, len, kb)}, 1) : V.narrow(1, len, kb).clone();
      }
    }
    logits.push_back(model->logits(model->model->norm(X.narrow(0, 0, len))));
  }
  return torch::cat(logits, 0);
}

CausalLM double_model(const ModelConfig& c, uint64_t seed) {
  torch::manual_seed(seed);
  CausalLM model(c);
  model->to(torch::kFloat64);
  model->eval();
  return model;
}

}  // namespace

TEST(ActivationBeacon, MatchesTheWindowByWindowReferenceForEveryAttentionScheme) {
  struct Case {
    const char* attend;
    int64_t l, alpha;
  };
  for (auto cs : {Case{"step", 8, 2}, Case{"segment", 8, 4}, Case{"full", 6, 3}, Case{"step", 8, 8}}) {
    auto mixer = json{{"type", "activation_beacon"}, {"window", cs.l}, {"ratios", json::array({cs.alpha})}, {"ratio", cs.alpha},
                      {"attend", cs.attend}};
    auto model = double_model(config(mixer.dump()), 3);
    auto tokens = torch::randint(0, 256, {1, 4 * cs.l + 3}, torch::kInt64);
    auto ref = reference_logits(model, tokens[0], cs.l, cs.alpha, cs.attend);
    torch::NoGradGuard ng;
    auto st = model->new_state();
    auto whole = model->forward(tokens, st)[0];
    EXPECT_LT(max_abs_diff(whole, ref), 1e-10) << cs.attend << " l " << cs.l << " alpha " << cs.alpha;
    // In pieces that cut windows anywhere, token by token included.
    std::mt19937 rng(cs.l * 7 + cs.alpha);
    for (int trial = 0; trial < 2; ++trial) {
      auto s = model->new_state();
      std::vector<torch::Tensor> outs;
      for (int64_t i = 0; i < tokens.size(1);) {
        int64_t n = trial == 0 ? 1 : std::min<int64_t>(tokens.size(1) - i, 1 + rng() % (2 * cs.l));
        outs.push_back(model->forward(tokens.narrow(1, i, n), s)[0]);
        i += n;
      }
      EXPECT_LT(max_abs_diff(torch::cat(outs, 0), ref), 1e-10) << cs.attend << " trial " << trial;
    }
  }
}

TEST(ActivationBeacon, TheMaskAsATable) {
  // Window 8, ratio 4: two beacons; 3 memory entries. Columns: memory 0-2 | raw 0-7 | beacons 0-1.
  auto row = [](const torch::Tensor& t, int64_t i) {
    std::string s;
    for (int64_t j = 0; j < t.size(1); ++j) s += t[i][j].item<bool>() ? '1' : '.';
    return s;
  };
  auto step = beacon_visibility(3, 8, 4, "step");
  EXPECT_EQ(row(step, 0), "1111111....1.");
  EXPECT_EQ(row(step, 1), "11111111111.1");
  auto seg = beacon_visibility(3, 8, 4, "segment");
  EXPECT_EQ(row(seg, 0), "1111111....1.");
  EXPECT_EQ(row(seg, 1), "111....1111.1");
  auto full = beacon_visibility(0, 8, 4, "full");
  EXPECT_EQ(row(full, 0), "111111111.");
  EXPECT_EQ(row(full, 1), "11111111.1");
}

TEST(ActivationBeacon, BeaconsOffIsTheBaseModelBitForBit) {
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  CausalLM base(config(R"({"type": "full_attention"})"));
  base->eval();
  auto copy_into = [&](CausalLM& m) {
    auto pb = base->named_parameters();
    for (auto& p : m->named_parameters())
      if (pb.contains(p.key())) p.value().copy_(pb[p.key()]);
    m->eval();
  };
  CausalLM off(config(R"({"type": "activation_beacon", "window": 16, "ratios": [4], "beacons": false})"));
  CausalLM on(config(R"({"type": "activation_beacon", "window": 16, "ratios": [4]})"));
  copy_into(off);
  copy_into(on);
  auto tokens = torch::randint(0, 256, {2, 70}, torch::kInt64);
  auto sb = base->new_state(), so = off->new_state();
  EXPECT_TRUE(torch::equal(off->forward(tokens, so), base->forward(tokens, sb)));
  EXPECT_TRUE(torch::equal(off->forward(tokens.narrow(1, 0, 9), so), base->forward(tokens.narrow(1, 0, 9), sb)));
  // With beacons on, the first window (no memory yet) is the base model too.
  auto s1 = base->new_state(), s2 = on->new_state();
  auto first = tokens.narrow(1, 0, 16);
  EXPECT_TRUE(torch::equal(on->forward(first, s2), base->forward(first, s1)));
  // Past it the outputs differ (the raw tokens of window 2 see only beacons of window 1).
  auto s3 = base->new_state(), s4 = on->new_state();
  EXPECT_GT(max_abs_diff(on->forward(tokens, s4), base->forward(tokens, s3)), 1e-3);
}

TEST(ActivationBeacon, StateGrowsExactlyByTheBeaconsOfCompletedWindowsPlusOneWindow) {
  torch::NoGradGuard ng;
  for (int64_t alpha : {2, 4, 8}) {
    auto c = config(json{{"type", "activation_beacon"}, {"window", 8}, {"ratios", json::array({2, 4, 8})}, {"ratio", alpha}}.dump());
    torch::manual_seed(1);
    CausalLM model(c);
    model->eval();
    auto s = model->new_state();
    std::mt19937 rng(alpha);
    int64_t seen = 0;
    while (seen < 100) {
      int64_t n = 1 + rng() % 13;
      model->forward(torch::randint(0, 256, {1, n}, torch::kInt64), s);
      seen += n;
      const int64_t entries = (seen / 8) * (8 / alpha) + 8;  // beacons + one raw window, per layer
      const int64_t per_layer = 2 * entries * c.d_model * 4 + 2 * 8;  // K and V float32, two counters
      ASSERT_EQ(s.bytes(), c.n_layers * per_layer) << "alpha " << alpha << " after " << seen << " tokens";
    }
  }
}

TEST(ActivationBeacon, TheRatioIsChosenByLengthAndKeptByTheStream) {
  BeaconOptions o;
  o.window = 256;
  o.max_positions = 1024;
  o.ratios = {2, 4, 8, 16, 32};
  EXPECT_EQ(o.reach(2), 768 * 2 + 256);
  EXPECT_EQ(o.choose(1000), 2);
  EXPECT_EQ(o.choose(1792), 2);
  EXPECT_EQ(o.choose(1793), 4);
  EXPECT_EQ(o.choose(16384), 32);  // 768 * 16 + 256 = 12544 < 16384 <= 24832
  EXPECT_EQ(o.choose(1 << 20), 32);  // nothing covers it: the largest
  EXPECT_EQ(o.choose(0), 32);        // unknown length: the largest

  torch::NoGradGuard ng;
  auto c = config(R"({"type": "activation_beacon", "window": 8, "ratios": [2, 4, 8], "max_positions": 24})");
  CausalLM model(c);
  model->eval();
  auto s = model->new_state();
  s.expected_tokens = 40;  // reach: 16 * 2 + 8 = 40 at ratio 2
  model->forward(torch::randint(0, 256, {1, 5}, torch::kInt64), s);
  for (auto& l : s.layers) EXPECT_EQ(l.counter("ratio"), 2);
  s.expected_tokens = 1000;  // a later change does not move a stream that has started
  model->forward(torch::randint(0, 256, {1, 5}, torch::kInt64), s);
  for (auto& l : s.layers) EXPECT_EQ(l.counter("ratio"), 2);
  auto s2 = model->new_state();
  s2.expected_tokens = 41;
  model->forward(torch::randint(0, 256, {1, 5}, torch::kInt64), s2);
  EXPECT_EQ(s2.layers[1].counter("ratio"), 4);

  // Training draws one ratio per sequence from the set, the same in every layer; the draws
  // advance in the run's memory (as the trainer keeps it), and without one each call draws as
  // the first call of a run.
  std::set<int64_t> drawn, fresh;
  auto run = model->new_state();
  for (int i = 0; i < 30; ++i) {
    auto f = model->new_state();
    model->forward(torch::randint(0, 256, {2, 17}, torch::kInt64), f, /*training=*/true);
    fresh.insert(f.layers[0].counter("ratio"));
    auto st = model->new_state();
    st.run_memory = &run.layers;
    model->forward(torch::randint(0, 256, {2, 17}, torch::kInt64), st, /*training=*/true);
    EXPECT_EQ(st.layers[0].counter("ratio"), st.layers[1].counter("ratio"));
    drawn.insert(st.layers[0].counter("ratio"));
  }
  EXPECT_EQ(drawn, (std::set<int64_t>{2, 4, 8}));
  EXPECT_EQ(fresh.size(), 1u);
}

TEST(ActivationBeacon, OnlyBeaconParametersReceiveGradientsWhenTheBaseIsFrozen) {
  torch::manual_seed(2);
  CausalLM model(config(R"({"type": "activation_beacon", "window": 8, "ratios": [4]})"));
  auto named = named_weights(model);
  int64_t n = freeze_except(named, {"beacon_"});
  EXPECT_EQ(n, 1 + 4 * 2);  // the embedding, and four projections in each of two layers
  auto st = model->new_state();
  auto tokens = torch::randint(0, 256, {2, 30}, torch::kInt64);
  auto logits = model->forward(tokens, st, true);
  torch::nn::functional::cross_entropy(logits.narrow(1, 0, 29).reshape({-1, 256}), tokens.narrow(1, 1, 29).reshape({-1}))
      .backward();
  for (auto& [name, p] : named) {
    bool beacon = name.find("beacon_") != std::string::npos;
    // The last layer's beacon queries and output projection make rows no layer reads.
    bool unused = name.rfind("model.layers.1.", 0) == 0 &&
                  (name.find("beacon_q_proj") != std::string::npos || name.find("beacon_o_proj") != std::string::npos);
    if (beacon && unused) {
      EXPECT_TRUE(!p.grad().defined() || p.grad().abs().sum().item<double>() == 0) << name;
    } else if (beacon) {
      ASSERT_TRUE(p.grad().defined()) << name;
      EXPECT_GT(p.grad().abs().sum().item<double>(), 0) << name;
    } else {
      EXPECT_FALSE(p.grad().defined()) << name;
    }
  }
}

TEST(ActivationBeacon, ConfigErrorsNameTheField) {
  expect_error([] { CausalLM m(config(R"({"type": "activation_beacon", "window": 10, "ratios": [4]})")); },
               {"model.mixer.ratios", "divide the window"});
  expect_error([] { CausalLM m(config(R"({"type": "activation_beacon", "window": 8, "ratios": [2], "attend": "all"})")); },
               {"model.mixer.attend", "stepwise"});
  expect_error([] { CausalLM m(config(R"({"type": "activation_beacon", "window": 8, "ratios": [2], "max_positions": 8})")); },
               {"model.mixer.max_positions"});
  expect_error([] { CausalLM m(config(R"({"type": "activation_beacon", "window": 8, "ratios": [2], "ratio": 3})")); },
               {"model.mixer.ratio"});
}

// Grouped-query heads computed another way: a GQA beacon model (2 key/value heads for 4 query
// heads, head_dim 6, q/k/v biases) equals the same model with every key/value head written out
// per query head (n_kv_heads = n_heads, its k/v weights and biases repeated per group), over
// several windows, so through the beacons' condensing and memory too.
TEST(ActivationBeacon, GroupedQueryHeadsEqualTheirRepeatedFullHeadModel) {
  torch::NoGradGuard ng;
  torch::manual_seed(8);
  const std::string common = R"("type": "activation_beacon", "window": 12, "ratios": [3], "head_dim": 6, "qkv_bias": true)";
  CausalLM gqa(config("{" + common + R"(, "n_kv_heads": 2})"));
  CausalLM full(config("{" + common + "}"));
  auto src = gqa->named_parameters();
  for (auto& p : src)  // biases start at zero: make them count
    if (p.key().find("bias") != std::string::npos) torch::nn::init::normal_(p.value(), 0, 0.3);
  for (auto& p : full->named_parameters()) {
    auto w = src[p.key()];
    if (w.size(0) != p.value().size(0))  // a k or v projection of 2 heads: each head twice, in order
      w = w.view({2, 6, -1}).repeat_interleave(2, 0).reshape(p.value().sizes());
    p.value().copy_(w);
  }
  gqa->eval(), full->eval();
  auto tokens = torch::randint(0, 256, {2, 50}, torch::kInt64);
  auto s1 = gqa->new_state(), s2 = full->new_state();
  auto a = gqa->forward(tokens, s1), b = full->forward(tokens, s2);
  EXPECT_LT(max_abs_diff(a, b), 1e-5);
  EXPECT_GT(a.abs().max().item<double>(), 0.1);
  EXPECT_LT(s1.bytes(), s2.bytes());  // the GQA state holds half the key/value heads
}
