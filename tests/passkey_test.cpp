// The passkey prompt (exact text of MECHANISMS.md section 4), its evaluation and its training rows.
#include <random>
#include <set>

#include "eval/passkey.h"
#include "test_util.h"
#include "text/passkey.h"
#include "train/data.h"

using namespace longctx;
using namespace longctx::testing;

namespace {
std::string noise_joined(size_t chars) {
  std::string s;
  while (s.size() < chars + 200) s += std::string(PasskeyText::noise) + " ";
  return s;
}
// A training stream of 20000 letters (stands for the text rows and the fill after answers).
TokenStream letters() { return letter_stream(); }
}  // namespace

TEST(Passkey, PromptIsTheReferenceTextAtExactLengthAndDepth) {
  ByteTokenizer tok;
  PasskeyBuilder pk(tok);
  for (int64_t L : {300, 1000, 4096}) {
    for (double depth : {0.0, 0.25, 0.5, 1.0}) {
      auto p = pk.make(L, depth, 42817);
      ASSERT_EQ(p.length(), L);
      auto toks = pk.all_tokens(p);
      ASSERT_EQ(int64_t(toks.size()), L);
      std::string text = tok.decode(toks);
      // join("\n", [task, noise_prefix, info, noise_suffix, ask]), noise cut from the joined noise.
      std::string joined = noise_joined(L);
      std::string expect = std::string(PasskeyText::task) + "\n" + joined.substr(0, p.n_prefix) + "\n" +
                           PasskeyText::info(42817) + "\n" + joined.substr(0, p.n_suffix) + "\n" + PasskeyText::ask;
      EXPECT_EQ(text, expect) << L << " " << depth;
      int64_t noise = p.n_prefix + p.n_suffix;
      EXPECT_NEAR(double(p.n_prefix), depth * noise, 0.5);
    }
  }
  EXPECT_EQ(PasskeyText::info(7), "The pass key is 7. Remember it. 7 is the pass key.");
  // Any range of tokens equals the slice of the whole prompt (how 1M-token prompts are streamed).
  auto p = pk.make(3000, 0.4, 123);
  auto all = pk.all_tokens(p);
  std::mt19937 rng(1);
  for (int i = 0; i < 50; ++i) {
    int64_t a = rng() % 3000, n = rng() % (3000 - a);
    std::vector<int64_t> part;
    pk.tokens(p, a, n, part);
    ASSERT_EQ(part, std::vector<int64_t>(all.begin() + a, all.begin() + a + n));
  }
  expect_error([&] { pk.make(50, 0.5, 1); }, {"length 50", "shorter"});
  // Without the task line (training's short prompts): same parts, exact length.
  auto bare = pk.make(200, 0.5, 31337, false);
  EXPECT_EQ(bare.length(), 200);
  std::string bt = tok.decode(pk.all_tokens(bare));
  EXPECT_EQ(bt.find("important info"), std::string::npos);
  EXPECT_NE(bt.find(PasskeyText::info(31337)), std::string::npos);
  EXPECT_EQ(bt.substr(bt.size() - std::string(PasskeyText::ask).size()), PasskeyText::ask);
}

TEST(Passkey, ScoreReadsTheFirstInteger) {
  EXPECT_EQ(first_integer(" 42817. Remember"), 42817);
  EXPECT_EQ(first_integer("abc 12 34"), 12);
  EXPECT_EQ(first_integer("no digits"), -1);
  EXPECT_EQ(first_integer(""), -1);
}

// A byte-level model of width 32 with random weights (seed 1).
static CausalLM tiny_model(int64_t layers, int64_t heads, const char* mixer) {
  torch::manual_seed(1);
  ModelConfig c;
  c.d_model = 32, c.n_layers = layers, c.n_heads = heads, c.d_ff = 64;
  c.mixer = nlohmann::json::parse(mixer);
  return CausalLM(c);
}

TEST(Passkey, EvaluationWritesEveryCellAndDoesNotDependOnChunking) {
  auto m = tiny_model(2, 4, R"({"type": "infini_attention", "segment": 64})");
  ByteTokenizer tok;
  PasskeyEvalOptions o;
  o.lengths = {400, 700};
  o.depths = {0, 50, 100};
  o.samples = 3;
  o.seed = 9;
  std::vector<nlohmann::json> recs;
  o.on_sample = [&](const nlohmann::json& j) { recs.push_back(j); };
  o.chunk = 128;
  auto a = eval_passkey(m, tok, o);
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(recs.size(), 18u);
  for (auto& cell : a) {
    EXPECT_EQ(cell.status, "ok");
    EXPECT_EQ(cell.samples, 3);
    EXPECT_GT(cell.state_bytes, 0);
    EXPECT_GT(cell.peak_rss_bytes, 0);
    auto j = cell.to_json();
    for (auto k : {"length", "depth", "samples", "accuracy", "seconds", "peak_rss_bytes"}) EXPECT_TRUE(j.contains(k)) << k;
  }
  auto gen_a = recs;
  recs.clear();
  o.chunk = 37;  // a different split of every prompt: same generations
  eval_passkey(m, tok, o);
  for (size_t i = 0; i < recs.size(); ++i) EXPECT_EQ(recs[i]["generated"], gen_a[i]["generated"]) << i;
  // Keys come from the seed: another seed, other keys.
  std::set<int64_t> k1, k2;
  for (auto& r : gen_a) k1.insert(r["key"].get<int64_t>());
  recs.clear();
  o.seed = 10;
  eval_passkey(m, tok, o);
  for (auto& r : recs) k2.insert(r["key"].get<int64_t>());
  EXPECT_NE(k1, k2);
  EXPECT_NE(passkey_heatmap_svg(a, "t").find("<svg"), std::string::npos);
  EXPECT_NE(passkey_table(a).find("| 700 |"), std::string::npos);
}

TEST(Passkey, ALongCellReportsHowFarItHasReadWhileItReads) {
  // A cell of a long prompt must not be silent until it ends: progress lines name the cell and
  // the tokens read so far, increasing up to the prompt's length.
  auto m = tiny_model(1, 2, R"({"type": "sliding_window", "window": 64})");
  ByteTokenizer tok;
  PasskeyEvalOptions o;
  o.lengths = {700};
  o.depths = {100};
  o.samples = 1;
  o.chunk = 64;
  o.progress_every = 0;
  std::vector<std::string> lines;
  o.log = [&](const std::string& s) { lines.push_back(s); };
  eval_passkey(m, tok, o);
  std::vector<int64_t> read;
  for (auto& l : lines) {
    auto at = l.find("length 700 depth 100%: read ");
    if (at == std::string::npos) continue;
    read.push_back(std::stoll(l.substr(at + 28)));
    EXPECT_NE(l.find(" of 700 tokens"), std::string::npos) << l;
  }
  ASSERT_GE(read.size(), 5u);  // ~600 tokens of shared prefix in chunks of 64
  for (size_t i = 1; i < read.size(); ++i) EXPECT_GT(read[i], read[i - 1]);
  EXPECT_LE(read.back(), 700);
  // The cell's own line still ends it.
  EXPECT_NE(lines.back().find("length 700 depth 100%: "), std::string::npos) << lines.back();
  EXPECT_NE(lines.back().find("correct"), std::string::npos) << lines.back();
}

TEST(Passkey, GrowingStateBeyondTheBudgetIsSkippedWithAReason) {
  torch::manual_seed(2);
  ModelConfig c;
  c.d_model = 32, c.n_layers = 1, c.n_heads = 4, c.d_ff = 64;  // full attention
  CausalLM m(c);
  ByteTokenizer tok;
  PasskeyEvalOptions o;
  o.lengths = {300, 1 << 20};
  o.depths = {50};
  o.samples = 2;
  o.memory_budget = 64 << 20;  // 64 MiB: 1M tokens of KV cache do not fit
  auto cells = eval_passkey(m, tok, o);
  ASSERT_EQ(cells.size(), 2u);
  EXPECT_EQ(cells[0].status, "ok");
  EXPECT_NE(cells[1].status.find("skipped"), std::string::npos);
  EXPECT_NE(cells[1].status.find("budget"), std::string::npos);
}

// Row r of a training batch's inputs, decoded.
std::string row_text(const Tokenizer& tok, const Batch& b, int64_t r) {
  auto x = b.x[r].contiguous();
  return tok.decode(std::vector<int64_t>(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel()));
}

TEST(Passkey, TrainingRowsMaskTheKeyWeighTheAnswerAndFollowTheCurriculum) {
  ByteTokenizer tok;
  TokenStream text = letters();
  DataConfig d;
  d.seq_len = 512;
  d.passkey.fraction = 1.0;
  d.passkey.min_length = 120;
  d.passkey.max_length = 500;
  d.passkey.curriculum_steps = 100;
  d.passkey.answer_weight = 50;
  TrainBatches tb(d, text, tok, 4, 7);
  EXPECT_EQ(tb.max_prompt_length(0), 120);
  EXPECT_EQ(tb.max_prompt_length(50), 310);
  EXPECT_EQ(tb.max_prompt_length(1000), 500);
  d.passkey.curriculum_hold = 30;
  TrainBatches held(d, text, tok, 4, 7);
  EXPECT_EQ(held.max_prompt_length(29), 120);
  EXPECT_EQ(held.max_prompt_length(80), 310);
  auto b = tb.get(60, 0);
  auto again = tb.get(60, 0);
  EXPECT_TRUE(torch::equal(b.x, again.x)) << "a batch depends only on (seed, step, micro)";
  for (int64_t r = 0; r < 4; ++r) {
    std::string s = row_text(tok, b, r);
    auto at = s.find(PasskeyText::ask);
    ASSERT_NE(at, std::string::npos) << s;
    EXPECT_LE(int64_t(at + std::string(PasskeyText::ask).size()), tb.max_prompt_length(60));
    int64_t key = first_integer(s.substr(s.find("The pass key is ")));
    std::string answer = " " + std::to_string(key) + ".";
    EXPECT_EQ(s.substr(at + std::string(PasskeyText::ask).size(), answer.size()), answer);
    // Targets: the answer weighs answer_weight, the first key's digits weigh 0.
    int64_t ans0 = int64_t(at + std::string(PasskeyText::ask).size());  // x index of the answer's first token
    for (size_t i = 0; i < answer.size(); ++i) EXPECT_EQ(b.w[r][ans0 - 1 + i].item<float>(), 50.f);
    int64_t k0 = int64_t(s.find("The pass key is ") + 16);
    for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(b.w[r][k0 - 1 + i].item<float>(), 0.f);
    EXPECT_EQ(b.w[r][k0 + 5].item<float>(), 1.f);
  }
}

TEST(Passkey, PackedRowsHoldSeveralPromptsEachWithItsWeightedAnswer) {
  ByteTokenizer tok;
  TokenStream text = letters();
  DataConfig d;
  d.seq_len = 2048;
  d.passkey.fraction = 1.0;
  d.passkey.min_length = 250;
  d.passkey.max_length = 400;
  d.passkey.answer_weight = 10;
  d.passkey.pack = true;
  TrainBatches tb(d, text, tok, 2, 3);
  auto b = tb.get(0, 0);
  for (int64_t r = 0; r < 2; ++r) {
    std::string s = row_text(tok, b, r);
    int asks = 0;
    for (size_t at = s.find(PasskeyText::ask); at != std::string::npos; at = s.find(PasskeyText::ask, at + 1)) {
      ++asks;
      size_t a0 = at + std::string(PasskeyText::ask).size();
      if (a0 + 7 > 2048) break;
      // The answer names the key of the info just before this question.
      size_t info = s.rfind("The pass key is ", at);
      int64_t key = first_integer(s.substr(info));
      EXPECT_EQ(first_integer(s.substr(a0)), key);
      EXPECT_EQ(b.w[r][int64_t(a0) - 1].item<float>(), 10.f);
    }
    EXPECT_GE(asks, 4) << "2048-token rows of prompts of at most 400 tokens";
  }
}

TEST(Passkey, BoundaryRowsPutTheAnswerOrTheKeyNextToASegmentEdge) {
  ByteTokenizer tok;
  TokenStream text = letters();
  DataConfig d;
  d.seq_len = 1024;
  d.passkey.fraction = 1.0;
  d.passkey.min_length = 300;
  d.passkey.max_length = 1000;
  d.passkey.boundary_fraction = 1.0;
  d.passkey.boundary_period = 128;
  TrainBatches tb(d, text, tok, 8, 5);
  int on_answer = 0, on_key = 0;
  auto near = [](int64_t at) {
    int64_t r = at % 128;
    return std::min(r, 128 - r) <= 4;
  };
  for (int64_t step = 0; step < 6; ++step) {
    auto b = tb.get(step, 0);
    for (int64_t r = 0; r < 8; ++r) {
      std::string s = row_text(tok, b, r);
      auto at = s.find(PasskeyText::ask);
      ASSERT_NE(at, std::string::npos);
      int64_t ans0 = int64_t(at + std::string(PasskeyText::ask).size());
      int64_t key0 = int64_t(s.find("The pass key is ") + 16);
      ASSERT_TRUE(near(ans0) || near(key0)) << "answer at " << ans0 << ", key at " << key0;
      on_answer += near(ans0), on_key += near(key0);
    }
  }
  // Both kinds occur (half each in expectation; 48 rows).
  EXPECT_GE(on_answer, 10);
  EXPECT_GE(on_key, 10);
  // Without the option, rows rarely land there: the test can fail.
  d.passkey.boundary_fraction = 0;
  TrainBatches plain(d, text, tok, 8, 5);
  int both = 0;
  for (int64_t step = 0; step < 6; ++step) {
    auto b = plain.get(step, 0);
    for (int64_t r = 0; r < 8; ++r) {
      std::string s = row_text(tok, b, r);
      int64_t ans0 = int64_t(s.find(PasskeyText::ask) + std::string(PasskeyText::ask).size());
      int64_t key0 = int64_t(s.find("The pass key is ") + 16);
      both += near(ans0) || near(key0);
    }
  }
  EXPECT_LT(both, 30);
}

TEST(Passkey, DistinctDigitKeysHaveNoRepeatedDigitAndNoLeadingZero) {
  std::mt19937_64 rng(3);
  std::set<int64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    int64_t k = distinct_digit_key(rng, 5);
    ASSERT_GE(k, 10000);
    ASSERT_LE(k, 99999);
    auto s = std::to_string(k);
    EXPECT_EQ(std::set<char>(s.begin(), s.end()).size(), 5u) << k;
    seen.insert(k);
  }
  EXPECT_GT(seen.size(), 1800u) << "keys spread over the 27,216 candidates";
  ByteTokenizer tok;
  TokenStream text = letters();
  DataConfig d;
  d.seq_len = 512;
  d.passkey.fraction = 1.0;
  d.passkey.min_length = 120;
  d.passkey.max_length = 500;
  d.passkey.distinct_digits = 1.0;
  TrainBatches tb(d, text, tok, 8, 7);
  auto b = tb.get(0, 0);
  for (int64_t r = 0; r < 8; ++r) {
    std::string s = row_text(tok, b, r);
    auto k = std::to_string(first_integer(s.substr(s.find("The pass key is "))));
    EXPECT_EQ(std::set<char>(k.begin(), k.end()).size(), 5u) << k;
  }
  // A key range that is not every n-digit number is refused by name.
  auto j = nlohmann::json::parse(R"({"model": {}, "data": {"seq_len": 512, "passkey": {"fraction": 1,
      "min_length": 100, "max_length": 400, "key_min": 100, "key_max": 999999, "distinct_digits": 0.5}}})");
  expect_error([&] { RunConfig::from_json(j, "run.json"); }, {"run.json", "distinct_digits"});
}

// The trace's last point is the whole prompt; its margins must equal those of one forward pass over
// prompt + answer (a different computation: no clones, no chunking). Points fall right after the
// info and then every `every` tokens; the key's imprint is positive where a memory exists.
TEST(Passkey, TraceMarginsEqualAFullForwardAndPointsFollowEvery) {
  torch::manual_seed(3);
  ModelConfig c;
  c.d_model = 32, c.n_layers = 2, c.n_heads = 4, c.d_ff = 64;
  c.mixer = nlohmann::json::parse(
      R"({"type": "infini_attention", "segment": 64, "update": "deltanet", "read": "token", "local": "window"})");
  CausalLM m(c);
  m->eval();
  ByteTokenizer tok;
  PasskeyTraceOptions o;
  o.length = 900, o.depth = 0.1, o.key = 48213, o.other_key = 90576, o.every = 200, o.chunk = 77;
  int calls = 0;
  o.on_point = [&](const nlohmann::json&) { ++calls; };
  auto pts = passkey_trace(m, tok, o);
  PasskeyBuilder pk(tok);
  auto p = pk.make(o.length, o.depth, o.key);
  const int64_t info_end = int64_t(p.head.size()) + p.n_prefix + int64_t(p.info.size());
  const int64_t body = p.length() - int64_t(p.ask.size());
  ASSERT_EQ(int64_t(pts.size()), (body - info_end + o.every - 1) / o.every + 1);
  EXPECT_EQ(calls, int(pts.size()));
  for (size_t i = 0; i + 1 < pts.size(); ++i) EXPECT_EQ(pts[i]["position"].get<int64_t>(), info_end + int64_t(i) * o.every);
  EXPECT_EQ(pts.back()["position"].get<int64_t>(), body);
  for (auto& L : pts[0]["layers"]) EXPECT_GT(L["imprint"].get<double>(), 0.0);

  auto all = pk.all_tokens(p);
  auto ans = pk.answer(o.key);
  all.insert(all.end(), ans.begin(), ans.end());
  torch::NoGradGuard ng;
  auto st = m->new_state();
  auto lp = torch::log_softmax(m->forward(torch::tensor(all, torch::kInt64).view({1, -1}), st)[0].to(torch::kFloat64), -1);
  auto margins = pts.back()["margins"];
  ASSERT_EQ(margins.size(), ans.size());
  const int64_t first = int64_t(all.size() - ans.size()) - 1;  // the position that predicts ans[0]
  for (size_t j = 0; j < ans.size(); ++j) {
    auto row = lp[first + int64_t(j)].clone();
    const double right = row[ans[j]].item<double>();
    row[ans[j]] = -std::numeric_limits<double>::infinity();
    EXPECT_NEAR(margins[j].get<double>(), right - row.max().item<double>(), 1e-4) << j;
  }
}

TEST(Passkey, ProbeReportsWriteStrengthsMemoryNormAndEachHeadsForgettingRate) {
  torch::manual_seed(4);
  ModelConfig c;
  c.d_model = 32, c.n_layers = 2, c.n_heads = 4, c.d_ff = 64;
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "segment": 64, "update": "deltanet", "read": "token",
                                      "local": "window", "decay": true, "decay_init": 0.002})");
  CausalLM m(c);
  ByteTokenizer tok;
  auto r = passkey_probe(m, tok, 700, 0.5, 48213, 97);
  ASSERT_EQ(r.beta_key.size(), 2u);
  ASSERT_EQ(r.forget.size(), 2u);
  for (size_t l = 0; l < 2; ++l) {
    EXPECT_GT(r.beta_key[l], 0.0);
    EXPECT_LT(r.beta_key[l], 1.0);
    EXPECT_GT(r.memory_norm[l], 0.0);
    ASSERT_EQ(r.forget[l].size(), 4u);
    // At initialisation every head forgets decay_init per token (W_a = 0).
    for (double f : r.forget[l]) EXPECT_NEAR(f, 0.002, 1e-9);
  }
  EXPECT_EQ(r.to_json()["forget"].size(), 2u);
  // Without the decay there is no rate to report.
  c.mixer["decay"] = false;
  CausalLM plain(c);
  auto r0 = passkey_probe(plain, tok, 300, 0.5, 48213);
  EXPECT_TRUE(r0.forget.empty());
  EXPECT_FALSE(r0.to_json().contains("forget"));
}
