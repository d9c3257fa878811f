// LongRoPE's search: every candidate keeps the paper's constraints, and a fixed-seed search is
// reproducible (and resumes to the same result).
#include <random>
#include "io/fs.h"
#include "model/hf.h"
#include "model/pretrained.h"
#include "search/longrope.h"
#include "test_util.h"
#include "train/trainer.h"

using namespace longctx;
using namespace longctx::testing;
using nlohmann::json;

namespace {
const std::vector<int64_t> kNHat = {0, 1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 64, 128, 256};

LongRopeCandidate random_valid(std::mt19937_64& rng, int64_t h, double cap) {
  LongRopeCandidate c;
  double v = 1.0;
  for (int64_t i = 0; i < h; ++i) {
    v = std::min(cap, v + 0.01 * double(rng() % 60));
    c.lambda.push_back(std::round(v * 100) / 100);
  }
  c.n_hat = kNHat[rng() % kNHat.size()];
  return c;
}

// A tiny trained model (W = 32) to search on.
std::string tiny_model() {
  static std::string dir;
  if (!dir.empty()) return dir;
  dir = temp_dir("longrope_model");
  auto j = json::parse(R"({
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64},
    "data": {"train": ["sotu"], "val_docs": 3, "seq_len": 32},
    "train": {"steps": 20, "batch_size": 8, "lr": 0.01, "warmup_steps": 2, "eval_every": 0,
              "eval_batches": 1, "checkpoint_every": 0, "log_every": 10, "seed": 1}})");
  train(RunConfig::from_json(j, "tiny"), TrainOptions{dir, false, 0, 0, true});
  return dir;
}
}  // namespace

TEST(LongRopeSearch, MutationAndCrossoverKeepEveryConstraint) {
  std::mt19937_64 rng(5);
  const double cap = 10.0;
  for (int trial = 0; trial < 300; ++trial) {
    auto a = random_valid(rng, 16, cap), b = random_valid(rng, 16, cap);
    ASSERT_EQ(longrope_violation(a, cap, kNHat), "");
    auto m = longrope_mutate(a, cap, 0.3, kNHat, rng());
    auto c = longrope_crossover(a, b, 0.15, rng());
    EXPECT_EQ(longrope_violation(m, cap, kNHat), "") << m.key();
    EXPECT_EQ(longrope_violation(c, cap, kNHat), "") << c.key();
  }
  // The checker itself catches each kind of violation.
  LongRopeCandidate bad;
  bad.lambda = {1.0, 2.0, 1.5};
  EXPECT_NE(longrope_violation(bad, cap, kNHat).find("decreases"), std::string::npos);
  bad.lambda = {1.0, 1.005};
  EXPECT_NE(longrope_violation(bad, cap, kNHat).find("grid"), std::string::npos);
  bad.lambda = {0.5};
  EXPECT_NE(longrope_violation(bad, cap, kNHat).find("outside"), std::string::npos);
  bad.lambda = {1.0};
  bad.n_hat = 3;
  EXPECT_NE(longrope_violation(bad, cap, kNHat).find("n_hat"), std::string::npos);
}

TEST(LongRopeSearch, AFixedSeedSearchIsReproducibleResumesAndWritesAValidModel) {
  auto model = tiny_model();
  LongRopeSearchOptions o;
  o.model = model;
  o.target_length = 128;  // 4x W
  o.population = 8, o.parents = 4, o.mutations = 3, o.crossovers = 3, o.iterations = 3, o.samples = 2;
  o.seed = 7;
  o.progress = false;
  o.out = temp_dir("longrope_a");
  auto a = search_longrope(o);
  o.out = temp_dir("longrope_b");
  auto b = search_longrope(o);
  EXPECT_EQ(a.best.key(), b.best.key());
  EXPECT_EQ(a.best_by_iteration, b.best_by_iteration);
  // Best fitness never gets worse (the population keeps its best).
  for (size_t i = 1; i < a.best_by_iteration.size(); ++i) EXPECT_LE(a.best_by_iteration[i], a.best_by_iteration[i - 1]);
  EXPECT_EQ(longrope_violation(a.best, 1.25 * 4, kNHat), "");
  // Resume: a search stopped after 1 iteration and continued ends where the whole one did.
  o.out = temp_dir("longrope_c");
  o.iterations = 1;
  search_longrope(o);
  o.iterations = 3;
  auto c = search_longrope(o);
  EXPECT_EQ(c.best.key(), a.best.key());
  EXPECT_EQ(c.best_by_iteration, a.best_by_iteration);
  // The output is a model folder whose config means the same in Hugging Face's terms.
  auto p = load_pretrained(o.out);
  auto sc = p.model_config.rope_scaling;
  EXPECT_EQ(sc["rope_type"], "longrope");
  EXPECT_EQ(sc["original_max_position_embeddings"], 32);
  EXPECT_EQ(sc["long_factor"].get<std::vector<double>>(), a.best.lambda);
  EXPECT_EQ(sc["short_factor"].size(), 8u);
  // Another search in the same folder is refused rather than mixed in.
  o.seed = 8;
  expect_error([&] { search_longrope(o); }, {"search_state.json", "another search"});
  // Short factors need long ones first.
  LongRopeSearchOptions s = o;
  s.model = model;
  s.short_factors = true;
  s.out = temp_dir("longrope_short");
  expect_error([&] { search_longrope(s); }, {"no longrope long factors"});
}

TEST(LongRopeSearch, AProgressiveSearchKeepsTheOriginalLengthAndStartsFromThePreviousFactors) {
  auto model = tiny_model();
  LongRopeSearchOptions o;
  o.model = model;
  o.target_length = 128;  // 4x W
  o.population = 6, o.parents = 3, o.mutations = 2, o.crossovers = 2, o.iterations = 1, o.samples = 1;
  o.progress = false;
  o.out = temp_dir("longrope_p4");
  auto first = search_longrope(o);
  // A model extended to 4x is searched again for 8x: W is still the original 32 (read from the
  // model's rope_scaling, not from a longer data.seq_len), and its factors seed the population.
  auto cfg = json::parse(read_file(o.out + "/config.json"));
  cfg["data"]["seq_len"] = 128;  // as after a fine-tune at the extended length
  write_file_atomic(o.out + "/config.json", cfg.dump(2));
  LongRopeSearchOptions p = o;
  p.model = o.out;
  p.target_length = 256;
  p.out = temp_dir("longrope_p8");
  search_longrope(p);
  auto st = json::parse(read_file(p.out + "/search_state.json"));
  EXPECT_EQ(st["identity"]["original"], 32);
  EXPECT_TRUE(st["seen"].contains(first.best.key())) << first.best.key();
  auto sc = load_pretrained(p.out).model_config.rope_scaling;
  EXPECT_EQ(sc["original_max_position_embeddings"], 32);
  EXPECT_DOUBLE_EQ(sc["factor"].get<double>(), 8.0);
  // Short factors for the 8x model: searched at W, the long factors kept as they were.
  LongRopeSearchOptions s = o;
  s.model = p.out;
  s.short_factors = true;
  s.out = temp_dir("longrope_p8_short");
  auto sr = search_longrope(s);
  auto ssc = load_pretrained(s.out).model_config.rope_scaling;
  EXPECT_EQ(ssc["long_factor"], sc["long_factor"]);
  EXPECT_EQ(ssc["short_factor"].get<std::vector<double>>(), sr.best.lambda);
  EXPECT_EQ(longrope_violation(sr.best, 8.0, kNHat), "");  // the short cap is the scale s
  // The long factors seed the short search, so the short factors read W at least as well.
  LongRopeCandidate long_seed;
  long_seed.lambda = sc["long_factor"].get<std::vector<double>>();
  auto sst = json::parse(read_file(s.out + "/search_state.json"));
  ASSERT_TRUE(sst["seen"].contains(long_seed.key())) << long_seed.key();
  EXPECT_LE(sr.best.fitness, sst["seen"][long_seed.key()].get<double>());
}

namespace {
std::string hf_checkpoint(const std::string& family, const std::string& extra) {
  const auto dir = temp_dir("longrope-hf-" + family);
  const auto cmd = "python3 " + source_dir() + "/scripts/make_hf_checkpoint.py " + family + " " + dir + " " + extra +
                   " > /dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return dir;
}

torch::Tensor logits_of(Pretrained& p, const torch::Tensor& ids) {
  torch::NoGradGuard ng;
  p.model->eval();
  auto st = p.model->new_state();
  return p.model->forward(ids, st).to(torch::kFloat64);
}
}  // namespace

TEST(LongRopeSearch, AHuggingFaceFolderComesOutAsOneWithTheFactorsInItsConfig) {
  // Llama 3.1 style, two shards: the long search. The output is a hub folder (shards, index,
  // tokenizer, generation config copied byte for byte) whose config.json carries the factors in
  // Phi-3's layout; read back, it is the model the search scored.
  const auto in = hf_checkpoint("llama", "--shards 2");
  LongRopeSearchOptions o;
  o.model = in;
  o.target_length = 96;
  o.population = 6, o.parents = 3, o.mutations = 2, o.crossovers = 2, o.iterations = 2, o.samples = 1;
  o.data = "sotu", o.seed = 3, o.progress = false;
  o.out = temp_dir("longrope-hf-out");
  auto r = search_longrope(o);
  EXPECT_EQ(r.best.n_hat, 0) << "transformers' longrope has no n_hat";
  EXPECT_TRUE(is_hf_folder(o.out));
  for (auto name : {"tokenizer.json", "generation_config.json", "model.safetensors.index.json",
                    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"})
    EXPECT_EQ(read_file(o.out + "/" + name), read_file(in + "/" + name)) << name;
  auto hf = json::parse(read_file(o.out + "/config.json"));
  EXPECT_EQ(hf["model_type"], "llama");
  EXPECT_EQ(hf["rope_scaling"]["rope_type"], "longrope");
  EXPECT_EQ(hf["rope_scaling"]["long_factor"].get<std::vector<double>>(), r.best.lambda);
  EXPECT_EQ(hf["rope_scaling"]["short_factor"].size(), r.best.lambda.size());
  EXPECT_FALSE(hf["rope_scaling"].contains("low_freq_factor")) << "llama3's fields are gone";
  EXPECT_EQ(hf["max_position_embeddings"], 96);
  const int64_t W = hf["original_max_position_embeddings"].get<int64_t>();
  // The folder read back equals the input read with the searched rope_scaling set directly.
  auto out = load_pretrained(o.out);
  json sc = {{"rope_type", "longrope"}, {"original_max_position_embeddings", W}, {"factor", 96.0 / double(W)},
             {"long_factor", r.best.lambda}, {"short_factor", hf["rope_scaling"]["short_factor"]}};
  auto ref = load_pretrained(in, {"model.rope_scaling=" + sc.dump(), "model.max_position_embeddings=96"});
  auto ids = torch::randint(0, 256, {1, 90}, torch::kInt64);
  EXPECT_LT((logits_of(out, ids) - logits_of(ref, ids)).abs().max().item<double>(), 1e-6);
  // Not the unscaled model (the check can fail): the factors change the logits past W.
  auto plain = load_pretrained(in);
  EXPECT_GT((logits_of(out, ids) - logits_of(plain, ids)).abs().max().item<double>(), 1e-4);

  // Phi-3 (longrope already, original length at the top level): the short search keeps the long
  // factors and writes the short ones where Phi-3 has them.
  const auto phi = hf_checkpoint("phi3", "");
  LongRopeSearchOptions s = o;
  s.model = phi, s.short_factors = true, s.out = temp_dir("longrope-hf-phi3-short");
  auto rs = search_longrope(s);
  auto in_cfg = json::parse(read_file(phi + "/config.json"));
  auto out_cfg = json::parse(read_file(s.out + "/config.json"));
  EXPECT_EQ(out_cfg["rope_scaling"]["short_factor"].get<std::vector<double>>(), rs.best.lambda);
  EXPECT_EQ(out_cfg["rope_scaling"]["long_factor"], in_cfg["rope_scaling"]["long_factor"]);
  EXPECT_EQ(out_cfg["original_max_position_embeddings"], in_cfg["original_max_position_embeddings"]);
  EXPECT_EQ(out_cfg["max_position_embeddings"], in_cfg["max_position_embeddings"]);
  EXPECT_NO_THROW(load_pretrained(s.out));
}
