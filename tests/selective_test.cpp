// RHO-1 selective language modeling: the selection, its loss, the reference, the categories,
// and the noisy corpus it selects against.
#include <fstream>
#include <set>

#include "io/fs.h"
#include "model/pretrained.h"
#include "test_util.h"
#include "text/noise.h"
#include "train/data.h"
#include "train/selective.h"
#include "train/trainer.h"

using namespace longctx;
using namespace longctx::testing;
using nlohmann::json;

namespace {
json tiny_json(int64_t steps) {
  auto j = json::parse(R"({
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64},
    "data": {"train": ["sotu"], "val_docs": 3, "ref_docs": 4, "seq_len": 32},
    "train": {"batch_size": 4, "lr": 0.01, "warmup_steps": 2, "eval_every": 2,
              "eval_batches": 2, "checkpoint_every": 0, "log_every": 1, "seed": 5}})");
  j["train"]["steps"] = steps;
  return j;
}
std::vector<json> log_rows(const std::string& dir) {
  std::ifstream f(dir + "/log.jsonl");
  std::vector<json> v;
  std::string line;
  while (std::getline(f, line)) v.push_back(json::parse(line));
  return v;
}
}  // namespace

TEST(Selective, KeepsExactlyCeilKOfTheValidTokensWithTheHighestScores) {
  torch::manual_seed(3);
  for (double keep : {0.6, 0.7, 0.01, 1.0}) {
    for (int64_t n : {1, 7, 10, 1000, 8192}) {
      auto score = torch::randn({n});
      auto valid = torch::rand({n}) > 0.1;
      valid[0] = true;
      auto mask = select_top(score, valid, keep);
      int64_t nv = valid.sum().item<int64_t>();
      int64_t want = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(keep * nv - 1e-9)));
      ASSERT_EQ(mask.sum().item<int64_t>(), want) << "keep " << keep << " n " << n;
      auto kept = mask > 0;
      EXPECT_FALSE((kept & ~valid).any().item<bool>()) << "an invalid token was kept";
      auto unkept_valid = valid & ~kept;
      if (unkept_valid.any().item<bool>()) {
        EXPECT_GE(score.masked_select(kept).min().item<double>(), score.masked_select(unkept_valid).max().item<double>());
      }
    }
  }
  // ceil, not round: 0.6 of 10 is 6, 0.6 of 11 is 7.
  EXPECT_EQ(select_top(torch::randn({10}), torch::ones({10}, torch::kBool), 0.6).sum().item<int64_t>(), 6);
  EXPECT_EQ(select_top(torch::randn({11}), torch::ones({11}, torch::kBool), 0.6).sum().item<int64_t>(), 7);
}

TEST(Selective, RandomControlKeepsTheSameCountReproduciblyBySeed) {
  auto valid = torch::rand({5000}) > 0.2;
  auto a = select_random(valid, 0.6, 11), b = select_random(valid, 0.6, 11), c = select_random(valid, 0.6, 12);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(a, c));
  int64_t nv = valid.sum().item<int64_t>();
  EXPECT_EQ(a.sum().item<int64_t>(), static_cast<int64_t>(std::ceil(0.6 * nv - 1e-9)));
  EXPECT_FALSE(((a > 0) & ~valid).any().item<bool>());
}

TEST(Selective, KeepingEveryTokenEqualsOrdinaryTrainingLossAndGradients) {
  torch::manual_seed(8);
  ModelConfig c;
  c.d_model = 32, c.n_layers = 2, c.n_heads = 2, c.d_ff = 64;
  CausalLM m(c), ref(c);
  auto x = torch::randint(0, 256, {3, 24}), y = torch::randint(0, 256, {3, 24});
  auto run = [&](bool selective) {
    m->zero_grad();
    auto st = m->new_state();
    auto logits = m->forward(x, st, true).reshape({-1, 256});
    torch::Tensor loss;
    if (selective) {
      auto per = torch::nn::functional::cross_entropy(logits, y.reshape({-1}),
                                                      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
      auto valid = torch::ones({per.size(0)}, torch::kBool);
      auto mask = select_top(per.detach() - token_losses(ref, x, y).reshape({-1}), valid, 1.0);
      loss = masked_mean(per, mask, valid).loss;
    } else {
      loss = torch::nn::functional::cross_entropy(logits, y.reshape({-1}));
    }
    loss.backward();
    std::vector<torch::Tensor> g;
    for (auto& p : m->parameters()) g.push_back(p.grad().clone());
    return std::make_pair(loss.item<double>(), g);
  };
  auto [l0, g0] = run(false);
  auto [l1, g1] = run(true);
  EXPECT_NEAR(l0, l1, 1e-6 * std::abs(l0));
  for (size_t i = 0; i < g0.size(); ++i) EXPECT_LT(max_abs_diff(g0[i], g1[i]), 1e-6) << "parameter " << i;
  // The reference took part without receiving any gradient.
  for (auto& p : ref->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(Selective, LossAveragesOverKeptTokensOnlyAndReportsBothSides) {
  auto per = torch::tensor({1.0, 2.0, 3.0, 4.0, 5.0}, torch::requires_grad());
  auto valid = torch::tensor({true, true, true, true, false});
  auto mask = torch::tensor({0.f, 1.f, 0.f, 1.f, 0.f});
  auto r = masked_mean(per, mask, valid);
  EXPECT_DOUBLE_EQ(r.loss.item<double>(), 3.0);  // (2 + 4) / 2
  EXPECT_DOUBLE_EQ(r.unkept_loss, 2.0);          // (1 + 3) / 2: the invalid 5 counts on neither side
  EXPECT_EQ(r.kept, 2);
  EXPECT_EQ(r.valid, 4);
  r.loss.backward();
  EXPECT_TRUE(torch::equal(per.grad(), torch::tensor({0.0, 0.5, 0.0, 0.5, 0.0})));
}

TEST(Selective, TokenCategoriesFollowTheFittedLossChange) {
  // Five tokens over three checkpoints: falling, rising, flat-low, flat-high, noisy-but-flat.
  std::vector<double> steps = {100, 200, 300};
  std::vector<torch::Tensor> L = {torch::tensor({3.0, 0.5, 0.2, 4.0, 1.0}), torch::tensor({2.0, 1.0, 0.25, 4.1, 1.3}),
                                  torch::tensor({1.0, 1.5, 0.2, 3.95, 0.9})};
  auto c = token_categories(steps, L);
  // Mean last loss = (1 + 1.5 + 0.2 + 3.95 + 0.9) / 5 = 1.51: the flat 0.2 and 0.9 are L->L, 3.95 H->H.
  EXPECT_DOUBLE_EQ(c.hl, 0.2);
  EXPECT_DOUBLE_EQ(c.lh, 0.2);
  EXPECT_DOUBLE_EQ(c.ll, 0.4);
  EXPECT_DOUBLE_EQ(c.hh, 0.2);
  expect_error([&] { token_categories({1}, {L[0]}); }, {">= 2 checkpoints"});
}

TEST(Noise, InsertsEachKindReproduciblyAtTheConfiguredShareAndKeepsTheCleanText) {
  Document d{"sotu/x", ""};
  for (int i = 0; i < 400; ++i) d.text += "Sentence number " + std::to_string(i) + " of the address is here. ";
  NoiseConfig c;
  c.share = 0.4;
  c.seed = 3;
  NoiseStats st;
  auto a = add_noise(d, c, &st);
  EXPECT_EQ(a, add_noise(d, c));
  c.seed = 4;
  EXPECT_NE(a, add_noise(d, c));
  double share = double(st.total_noise()) / double(a.size());
  EXPECT_NEAR(share, 0.4, 0.03);
  EXPECT_EQ(int64_t(a.size()), st.clean_bytes + st.total_noise());
  for (auto& k : NoiseConfig::all_kinds()) EXPECT_GT(st.noise_bytes[k], 0) << k;
  EXPECT_NE(a.find(" |\n"), std::string::npos);  // a table row
  EXPECT_NE(a.find("<"), std::string::npos);     // markup
  // Every clean sentence is still there, in order.
  size_t at = 0;
  for (int i = 0; i < 400; ++i) {
    auto s = "Sentence number " + std::to_string(i) + " of the address is here.";
    at = a.find(s, at);
    ASSERT_NE(at, std::string::npos) << i;
  }
  c.kinds = {"bogus"};
  expect_error([&] { add_noise(d, c); }, {"unknown kind 'bogus'"});
}

TEST(Noise, OnlyTheMainTrainingStreamIsNoisyAndTheThreeSplitsAreDisjoint) {
  auto j = tiny_json(1);
  j["data"]["noise"] = {{"share", 0.3}, {"seed", 2}};
  auto main = RunConfig::from_json(j, "main");
  j["data"]["subset"] = "reference";
  auto refc = RunConfig::from_json(j, "ref");
  ByteTokenizer tok;
  auto a = prepare_data(main.data, tok), r = prepare_data(refc.data, tok);
  EXPECT_EQ(a.split.ref.size(), 4u);
  EXPECT_EQ(a.split.val, r.split.val);
  EXPECT_EQ(r.split.train, r.split.ref);
  std::set<std::string> tr(a.split.train.begin(), a.split.train.end());
  for (auto& n : a.split.ref) EXPECT_FALSE(tr.count(n)) << n;
  for (auto& n : a.split.val) EXPECT_FALSE(tr.count(n)) << n;
  for (auto& n : a.split.val) EXPECT_FALSE(std::count(a.split.ref.begin(), a.split.ref.end(), n)) << n;
  EXPECT_EQ(a.val.tokens, r.val.tokens);  // validation stays clean
  EXPECT_NEAR(double(a.noise.total_noise()) / double(a.train.bytes), 0.3, 0.02);
  EXPECT_EQ(r.noise.total_noise(), 0);
  // Document boundaries are marked: the separator's tokens and each document's first token.
  ASSERT_EQ(a.train.boundary.size(), a.train.tokens.size());
  EXPECT_EQ(a.train.boundary[0], 1);
  EXPECT_EQ(a.train.boundary.back(), 1);
  j["data"]["ref_docs"] = 0;
  expect_error([&] { RunConfig::from_json(j, "cfg.json"); }, {"cfg.json", "data.subset", "ref_docs"});
}

TEST(Selective, TrainingKeepsItsShareAndLeavesTheReferenceUntouchedWithOrWithoutTheCache) {
  auto base = temp_dir("slm_ref");
  {
    auto j = tiny_json(2);
    j["data"]["subset"] = "reference";
    train(RunConfig::from_json(j, "ref"), TrainOptions{base, false, 0, 0, true});
  }
  auto before = read_file(base + "/model.safetensors");
  auto j = tiny_json(4);
  j["data"]["noise"] = {{"share", 0.5}};
  j["train"]["category_tokens"] = 256;
  j["train"]["selective"] = {{"reference", base}, {"keep", 0.6}};
  auto fly = temp_dir("slm_fly"), cached = temp_dir("slm_cached");
  auto r1 = train(RunConfig::from_json(j, "slm"), TrainOptions{fly, false, 0, 0, true});
  j["train"]["selective"]["cache"] = cached + "/ref_losses.safetensors";
  auto r2 = train(RunConfig::from_json(j, "slm"), TrainOptions{cached, false, 0, 0, true});
  EXPECT_TRUE(std::filesystem::exists(cached + "/ref_losses.safetensors"));
  // The cache holds the reference's losses in float16: the same selection up to rounding.
  EXPECT_NEAR(r1.final_loss, r2.final_loss, 0.05);
  EXPECT_EQ(read_file(base + "/model.safetensors"), before);  // the reference never trained
  int n_sel = 0, n_cat = 0;
  for (auto& row : log_rows(fly)) {
    if (row.contains("kept_fraction")) {
      ++n_sel;
      EXPECT_NEAR(row["kept_fraction"].get<double>(), 0.6, 0.02);  // boundaries are not scored
      EXPECT_TRUE(row.contains("unkept_loss") && row.contains("reference_s"));
    }
    if (row.contains("categories")) {
      ++n_cat;
      double sum = 0;
      for (auto& [k, v] : row["categories"].items()) sum += v.get<double>();
      EXPECT_NEAR(sum, 1.0, 1e-9);
    }
  }
  EXPECT_EQ(n_sel, 4);
  EXPECT_EQ(n_cat, 1);  // evaluations at steps 2 and 4: categories from the second on
  EXPECT_TRUE(std::filesystem::exists(fly + "/categories.svg"));
  // A missing or mismatched reference is refused by name.
  j["train"]["selective"] = {{"keep", 0.6}};
  expect_error([&] { RunConfig::from_json(j, "slm.json"); }, {"slm.json", "train.selective.reference"});
  j["train"]["selective"] = {{"reference", base}, {"keep", 1.5}};
  expect_error([&] { RunConfig::from_json(j, "slm.json"); }, {"train.selective.keep", "(0, 1]"});
}

TEST(Selective, AResumedSelectiveRunReproducesTheUninterruptedOneWithItsCategories) {
  auto base = temp_dir("slm_resume_ref");
  {
    auto j = tiny_json(2);
    j["data"]["subset"] = "reference";
    train(RunConfig::from_json(j, "ref"), TrainOptions{base, false, 0, 0, true});
  }
  auto j = tiny_json(6);
  j["data"]["noise"] = {{"share", 0.5}};
  j["train"]["category_tokens"] = 256;
  j["train"]["selective"] = {{"reference", base}, {"keep", 0.7}};
  auto cfg = RunConfig::from_json(j, "slm");
  auto a = temp_dir("slm_resume_a"), b = temp_dir("slm_resume_b");
  auto ra = train(cfg, TrainOptions{a, false, 0, 0, true});
  train(cfg, TrainOptions{b, false, 3, 0, true});
  auto rb = train(cfg, TrainOptions{b, true, 0, 0, true});
  EXPECT_EQ(ra.final_loss, rb.final_loss);
  auto la = log_rows(a), lb = log_rows(b);
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i)
    if (la[i].contains("categories")) {
      EXPECT_EQ(la[i]["categories"], lb[i]["categories"]) << "row " << i;
    }
}
