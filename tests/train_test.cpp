#include <fstream>

#include "io/fs.h"
#include "model/pretrained.h"
#include "test_util.h"
#include "train/optim.h"
#include "train/trainer.h"

using namespace longctx;
using namespace longctx::testing;
using nlohmann::json;

namespace {
RunConfig tiny_run(int64_t steps) {
  auto j = json::parse(R"({
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64},
    "data": {"train": ["sotu"], "val_docs": 3, "seq_len": 32},
    "train": {"batch_size": 4, "grad_accum": 2, "lr": 0.01, "warmup_steps": 2, "eval_every": 3,
              "eval_batches": 2, "checkpoint_every": 0, "log_every": 1, "seed": 9,
              "param_groups": [{"match": "norm", "lr_scale": 3.0, "weight_decay": 0.0}]}})");
  j["train"]["steps"] = steps;
  return RunConfig::from_json(j, "tiny");
}
std::vector<json> log_rows(const std::string& dir) {
  std::ifstream f(dir + "/log.jsonl");
  std::vector<json> v;
  std::string line;
  while (std::getline(f, line)) v.push_back(json::parse(line));
  return v;
}
}  // namespace

// Resume exactness for every kind of mixer, with the training-time randomness each has
// (TransformerFAM's state passing and position offsets, Activation Beacon's ratio draws): N
// steps in one run, and N/2 + --resume, give identical loss lines and mixer diagnostics.
class ResumeEveryMixer : public ::testing::TestWithParam<std::pair<const char*, const char*>> {};

TEST_P(ResumeEveryMixer, ResumedRunLogsTheUninterruptedRunsLossesBitForBit) {
  auto cfg = tiny_run(8);
  auto j = cfg.to_json();
  j["model"]["mixer"] = json::parse(GetParam().second);
  cfg = RunConfig::from_json(j, "tiny");
  auto a = temp_dir(std::string("resume_mixer_a_") + GetParam().first);
  auto b = temp_dir(std::string("resume_mixer_b_") + GetParam().first);
  TrainOptions oa;
  oa.out = a;
  oa.quiet = true;
  train(cfg, oa);
  TrainOptions ob = oa;
  ob.out = b;
  ob.stop_after = 4;
  train(cfg, ob);
  ob.resume = true;
  ob.stop_after = 0;
  train(cfg, ob);
  auto la = log_rows(a), lb = log_rows(b);
  ASSERT_EQ(la.size(), lb.size());
  int losses = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    if (!la[i].contains("loss")) continue;
    ++losses;
    EXPECT_EQ(la[i]["loss"].get<double>(), lb[i]["loss"].get<double>()) << "step " << la[i]["step"];
    EXPECT_EQ(la[i].value("mixers", json()), lb[i].value("mixers", json())) << "step " << la[i]["step"];
  }
  EXPECT_EQ(losses, 8);
}

INSTANTIATE_TEST_SUITE_P(
    Mixers, ResumeEveryMixer,
    ::testing::Values(
        std::make_pair("fam", R"({"type": "fam", "block": 8, "memory_blocks": 1, "fam_tokens": 2, "state_passing": 0.5, "position_offset": true, "seed": 3})"),
        std::make_pair("bswa", R"({"type": "bswa", "block": 8, "memory_blocks": 1})"),
        std::make_pair("beacon", R"({"type": "activation_beacon", "window": 8, "ratios": [2, 4, 8], "seed": 5})"),
        std::make_pair("megalodon", R"({"type": "megalodon", "z_dim": 16, "v_dim": 32, "chunk": 8, "groups": 4, "ndim": 4})"),
        std::make_pair("infini_deltanet", R"({"type": "infini_attention", "segment": 8, "update": "deltanet", "read": "token", "local": "window"})"),
        std::make_pair("infini_delta", R"({"type": "infini_attention", "segment": 8})"),
        std::make_pair("sliding_window", R"({"type": "sliding_window", "window": 8})")),
    [](const auto& info) { return std::string(info.param.first); });

TEST(Train, ResumeReproducesTheUninterruptedRunExactly) {
  auto cfg = tiny_run(8);
  auto a = temp_dir("resume_a"), b = temp_dir("resume_b");
  TrainOptions oa;
  oa.out = a;
  oa.quiet = true;
  auto ra = train(cfg, oa);
  TrainOptions ob = oa;
  ob.out = b;
  ob.stop_after = 5;
  train(cfg, ob);
  EXPECT_TRUE(std::filesystem::exists(b + "/checkpoint-5/optimizer.safetensors"));
  // A run folder with a checkpoint is never overwritten silently.
  expect_error([&] { train(cfg, ob); }, {"already holds checkpoint-5", "--resume"});
  ob.resume = true;
  // A resume whose config changes the model is refused by field, even when the weights would fit.
  auto changed = cfg;
  changed.model.rope_theta = 500000;
  expect_error([&] { train(changed, ob); }, {"changes the model", "model.rope_theta", "init_from"});
  ob.stop_after = 0;
  ob.stop_at = 7;  // an absolute step, the schedule of train.steps unchanged
  train(cfg, ob);
  EXPECT_TRUE(std::filesystem::exists(b + "/checkpoint-7/optimizer.safetensors"));
  ob.stop_at = 0;
  auto rb = train(cfg, ob);
  EXPECT_EQ(ra.final_loss, rb.final_loss);
  EXPECT_EQ(ra.val_loss, rb.val_loss);
  auto la = log_rows(a), lb = log_rows(b);
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_EQ(la[i]["step"], lb[i]["step"]);
    if (la[i].contains("loss")) {
      EXPECT_EQ(la[i]["loss"].get<double>(), lb[i]["loss"].get<double>()) << "row " << i;
    }
    if (la[i].contains("val_loss")) {
      EXPECT_EQ(la[i]["val_loss"].get<double>(), lb[i]["val_loss"].get<double>());
    }
  }
  auto wa = load_pretrained(a), wb = load_pretrained(b);
  auto pb = wb.model->named_parameters();
  for (auto& p : wa.model->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
  // The folder is a loadable model with its split recorded.
  auto split = json::parse(read_file(a + "/split.json"));
  EXPECT_EQ(split["val"].size(), 3u);
  EXPECT_TRUE(std::filesystem::exists(a + "/loss.svg"));
}

TEST(Train, InitFromStartsFromAnotherRunsWeights) {
  auto cfg = tiny_run(3);
  auto a = temp_dir("init_a"), b = temp_dir("init_b");
  TrainOptions o;
  o.out = a;
  o.quiet = true;
  train(cfg, o);
  // One step at a negligible learning rate from a's weights leaves them where they were.
  auto cfg2 = tiny_run(1);
  cfg2.train.init_from = a;
  cfg2.train.lr = 1e-12;
  cfg2.train.warmup_steps = 0;
  o.out = b;
  train(cfg2, o);
  auto wa = load_pretrained(a), wb = load_pretrained(b);
  auto pb = wb.model->named_parameters();
  for (auto& p : wa.model->named_parameters())
    EXPECT_LT((p.value() - pb[p.key()]).abs().max().item<double>(), 1e-6) << p.key();
  cfg2.train.init_from = a + "/nowhere";
  expect_error([&] { train(cfg2, TrainOptions{temp_dir("init_c"), false, 0, 0, true}); }, {"init_from", "nowhere"});
}

TEST(Train, LossFallsOnRealText) {
  auto cfg = tiny_run(30);
  auto d = temp_dir("falls");
  TrainOptions o;
  o.out = d;
  o.quiet = true;
  train(cfg, o);
  auto rows = log_rows(d);
  double first = rows.front()["loss"], last = 0;
  for (auto& r : rows)
    if (r.contains("loss")) last = r["loss"];
  EXPECT_LT(last, first - 1.0);  // from ~ln 256 = 5.5 nats
}

TEST(Optim, AdamWMatchesLibtorchAdamW) {
  torch::manual_seed(0);
  auto w0 = torch::randn({5, 4});
  auto target = torch::randn({5, 4});
  auto a = w0.clone().requires_grad_(), b = w0.clone().requires_grad_();
  TrainConfig t;
  std::vector<ParamGroup> g = {{"decay", 1.0, 0.1, {"w"}, {a}}};
  AdamW mine(g, 0.9, 0.95, 1e-8);
  torch::optim::AdamW ref({b}, torch::optim::AdamWOptions(0.01).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1));
  for (int i = 0; i < 6; ++i) {
    ((a - target).pow(2).sum()).backward();
    mine.step(0.01);
    mine.zero_grad();
    ref.zero_grad();
    ((b - target).pow(2).sum()).backward();
    ref.step();
  }
  EXPECT_LT(max_abs_diff(a, b), 1e-6);
}

TEST(Optim, ParamGroupsByRuleAndDecayByRank) {
  TrainConfig t;
  t.param_groups = {{"gate", 10.0, 0.0}};
  auto m = torch::randn({3, 3}).requires_grad_(), v = torch::randn({3}).requires_grad_(),
       gte = torch::randn({2}).requires_grad_();
  auto groups = make_param_groups({{"layer.w", m}, {"layer.norm.weight", v}, {"layer.gate", gte}}, t);
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0].names[0], "layer.gate");
  EXPECT_EQ(groups[0].lr_scale, 10.0);
  EXPECT_EQ(groups[1].name, "decay");
  EXPECT_EQ(groups[2].name, "no_decay");
  EXPECT_EQ(groups[2].weight_decay, 0.0);
}

TEST(Optim, ZeroLrScaleFreezesAGroupIncludingWeightDecay) {
  TrainConfig t;
  t.param_groups = {{"gate", 0.0, 0.1}};
  auto w = torch::randn({3, 3}).requires_grad_(), gte = torch::randn({2}).requires_grad_();
  auto w0 = w.detach().clone(), g0 = gte.detach().clone();
  AdamW opt(make_param_groups({{"layer.w", w}, {"layer.gate", gte}}, t), 0.9, 0.95, 1e-8);
  for (int i = 0; i < 3; ++i) {
    ((w * w).sum() + (gte * gte).sum()).backward();
    opt.step(0.01);
    opt.zero_grad();
  }
  EXPECT_TRUE(torch::equal(gte, g0));
  EXPECT_FALSE(torch::equal(w, w0));
}

TEST(Optim, WarmupThenCosineToTheFloor) {
  TrainConfig t;
  t.steps = 100, t.warmup_steps = 10, t.lr = 1.0, t.min_lr_ratio = 0.1;
  EXPECT_NEAR(lr_at(t, 0), 0.1, 1e-12);
  EXPECT_NEAR(lr_at(t, 9), 1.0, 1e-12);
  EXPECT_NEAR(lr_at(t, 10), 1.0, 1e-12);
  EXPECT_NEAR(lr_at(t, 55), 0.55, 1e-12);
  EXPECT_NEAR(lr_at(t, 100), 0.1, 1e-12);
}

TEST(Checkpoint, WeightsRoundTripInHalfPrecisionAndRefuseOtherShapes) {
  ModelConfig c;
  c.d_model = 32, c.n_layers = 1, c.n_heads = 2, c.d_ff = 64;
  CausalLM m(c);
  auto d = temp_dir("weights");
  save_weights(d + "/m.safetensors", m, "BF16");
  CausalLM m2(c);
  load_weights(d + "/m.safetensors", m2);
  auto p2 = m2->named_parameters();
  for (auto& p : m->named_parameters())
    EXPECT_TRUE(torch::equal(p.value().to(torch::kBFloat16).to(torch::kFloat32), p2[p.key()])) << p.key();
  c.d_ff = 96;
  CausalLM m3(c);
  expect_error([&] { load_weights(d + "/m.safetensors", m3); }, {"m.safetensors", "mlp", "shape"});
}

TEST(Checkpoint, IgnoredTensorsTransferWeightsBetweenMixers) {
  ModelConfig c;
  c.d_model = 32, c.n_layers = 2, c.n_heads = 2, c.d_ff = 64;
  c.mixer = nlohmann::json::parse(R"({"type": "infini_attention", "segment": 8})");
  CausalLM infini(c);
  auto d = temp_dir("transfer");
  save_weights(d + "/m.safetensors", infini, "F32");
  c.mixer = nlohmann::json::parse(R"({"type": "sliding_window", "window": 8})");
  CausalLM sw(c);
  // Without the ignore list the extra gates are an error that names them.
  expect_error([&] { load_weights(d + "/m.safetensors", sw); }, {"m.safetensors", "memory_gate"});
  load_weights(d + "/m.safetensors", sw, {"memory_gate"});
  auto pi = infini->named_parameters();
  int64_t n = 0;
  for (auto& p : sw->named_parameters()) {
    EXPECT_TRUE(torch::equal(p.value(), pi[p.key()])) << p.key();
    ++n;
  }
  EXPECT_EQ(n + 2, int64_t(pi.size()));  // every parameter but the two layers' gates
  // The other way: TransformerFAM's initial memory is not in the file and keeps its init.
  c.mixer = nlohmann::json::parse(R"({"type": "fam", "block": 8, "fam_tokens": 2})");
  CausalLM fam(c);
  auto before = fam->named_parameters()["model.layers.0.self_attn.fam_init"].clone();
  expect_error([&] { load_weights(d + "/m.safetensors", fam, {"memory_gate"}); }, {"missing tensor", "fam_init"});
  load_weights(d + "/m.safetensors", fam, {"memory_gate", "fam_init"});
  auto pf = fam->named_parameters();
  EXPECT_TRUE(torch::equal(pf["model.layers.0.self_attn.fam_init"], before));
  EXPECT_TRUE(torch::equal(pf["model.layers.1.self_attn.q_proj.weight"], pi["model.layers.1.self_attn.q_proj.weight"]));
}

TEST(Train, BeaconsTrainAloneFromCopiesOfTheFrozenBase) {
  // A base transformer, then Activation Beacon from it: the beacons' projections start as copies
  // of the base's (train.init_copy), only they train (train.trainable), the base stays as it was.
  auto base_cfg = tiny_run(2);
  auto a = temp_dir("beacon_base"), b = temp_dir("beacon_run"), c = temp_dir("beacon_still");
  TrainOptions o;
  o.out = a;
  o.quiet = true;
  train(base_cfg, o);
  auto j = json::parse(R"({
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64,
              "mixer": {"type": "activation_beacon", "window": 8, "ratios": [2, 4]}},
    "data": {"train": ["sotu"], "val_docs": 3, "seq_len": 32},
    "train": {"steps": 3, "batch_size": 2, "lr": 0.01, "warmup_steps": 0, "eval_every": 3, "eval_batches": 1,
              "checkpoint_every": 0, "log_every": 1, "seed": 4, "trainable": ["beacon_"], "init_ignore": ["beacon_embed"],
              "init_copy": {"beacon_q_proj": "q_proj", "beacon_k_proj": "k_proj", "beacon_v_proj": "v_proj",
                            "beacon_o_proj": "o_proj"}}})");
  j["train"]["init_from"] = a;
  o.out = b;
  train(RunConfig::from_json(j, "beacon"), o);
  auto pa = load_pretrained(a).model->named_parameters();
  auto pb = load_pretrained(b).model->named_parameters();
  for (auto& p : pa)  // every base parameter, bit for bit
    EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
  const std::string l0 = "model.layers.0.self_attn.";
  EXPECT_GT(max_abs_diff(pb[l0 + "beacon_k_proj.weight"], pa[l0 + "k_proj.weight"]), 1e-4);  // trained
  // At a negligible learning rate the copies are still the base's projections.
  j["train"]["lr"] = 1e-12;
  o.out = c;
  train(RunConfig::from_json(j, "beacon"), o);
  auto pc = load_pretrained(c).model->named_parameters();
  for (auto n : {"q_proj", "k_proj", "v_proj", "o_proj"})
    EXPECT_LT(max_abs_diff(pc[l0 + "beacon_" + n + ".weight"], pa[l0 + n + ".weight"]), 1e-6) << n;
  // A copy rule whose source the file lacks is named.
  j["train"]["init_copy"] = {{"beacon_q_proj", "nothing_proj"}};
  expect_error([&] { train(RunConfig::from_json(j, "beacon"), TrainOptions{temp_dir("beacon_bad"), false, 0, 0, true}); },
               {"beacon_q_proj", "nothing_proj", "which the file lacks"});
}

namespace {
RunConfig dnet_run(int64_t steps, int64_t tbptt, double carry) {
  auto c = tiny_run(steps);
  auto j = c.to_json();
  j["model"]["mixer"] = json::parse(R"({"type": "infini_attention", "segment": 8, "update": "deltanet", "chunk": 4})");
  j["train"]["tbptt"] = tbptt;
  j["train"]["carry_fraction"] = carry;
  return RunConfig::from_json(j, "dnet");
}
std::vector<double> losses(const std::string& dir) {
  std::vector<double> v;
  for (auto& r : log_rows(dir))
    if (r.contains("loss")) v.push_back(r["loss"].get<double>());
  return v;
}
}  // namespace

TEST(Train, TbpttWindowsReadTheSameLossAndCutTheGradientAtWindowEdges) {
  auto whole = temp_dir("tbptt_whole"), windows = temp_dir("tbptt_windows");
  TrainOptions o;
  o.quiet = true;
  o.out = whole;
  train(dnet_run(3, 0, 0), o);
  o.out = windows;
  train(dnet_run(3, 16, 0), o);
  auto a = losses(whole), b = losses(windows);
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  // Step 1: the same weights read the same rows, the state carried across the window edge.
  EXPECT_NEAR(a[0], b[0], 1e-5);
  // The gradient differs (the memory's graph is cut at token 16), so the weights do.
  auto wa = load_pretrained(whole), wb = load_pretrained(windows);
  double diff = 0;
  auto pb = wb.model->named_parameters();
  for (auto& p : wa.model->named_parameters()) diff = std::max(diff, (p.value() - pb[p.key()]).abs().max().item<double>());
  EXPECT_GT(diff, 0);
}

TEST(Train, CarriedStatesChangeTheRunAndResumeExactly) {
  auto a = temp_dir("carry_a"), b = temp_dir("carry_b"), c = temp_dir("carry_c");
  TrainOptions o;
  o.quiet = true;
  o.out = a;
  train(dnet_run(8, 16, 0.5), o);
  o.out = b;
  o.stop_after = 5;
  train(dnet_run(8, 16, 0.5), o);
  EXPECT_TRUE(std::filesystem::exists(b + "/checkpoint-5/carry-1.safetensors")) << "one state per micro-batch";
  o.resume = true;
  o.stop_after = 0;
  train(dnet_run(8, 16, 0.5), o);
  auto la = losses(a), lb = losses(b);
  ASSERT_EQ(la.size(), 8u);
  ASSERT_EQ(lb.size(), 8u);
  for (size_t i = 0; i < la.size(); ++i) EXPECT_EQ(la[i], lb[i]) << "step " << i + 1;
  // Without carrying, some later step reads different losses: the carried states were used.
  TrainOptions oc;
  oc.quiet = true;
  oc.out = c;
  train(dnet_run(8, 16, 0), oc);
  auto lc = losses(c);
  EXPECT_EQ(la[0], lc[0]);
  double most = 0;
  for (size_t i = 1; i < la.size(); ++i) most = std::max(most, std::abs(la[i] - lc[i]));
  EXPECT_GT(most, 1e-6);
}
