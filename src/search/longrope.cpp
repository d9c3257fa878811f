#include "search/longrope.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "io/fs.h"
#include "io/json_file.h"
#include "model/hf.h"
#include "model/pretrained.h"
#include "nn/rope_scaling.h"
#include "text/corpus.h"
#include "util/error.h"
#include "util/system.h"

namespace fs = std::filesystem;

namespace longctx {

namespace {

double on_grid(double v) { return std::round(v * 100.0) / 100.0; }

// Onto the grid, into [1, cap], non-decreasing.
void constrain(std::vector<double>& l, double cap) {
  double prev = 1.0;
  for (auto& v : l) {
    v = std::clamp(on_grid(v), 1.0, on_grid(cap));
    v = std::max(v, prev);
    prev = v;
  }
}

}  // namespace

std::string LongRopeCandidate::key() const {
  std::string k = std::to_string(n_hat) + ":";
  for (double v : lambda) k += std::to_string(int64_t(std::llround(v * 100))) + ",";
  return k;
}

nlohmann::json LongRopeCandidate::to_json() const {
  return {{"lambda", lambda}, {"n_hat", n_hat}, {"fitness", fitness}, {"origin", origin}};
}

LongRopeCandidate LongRopeCandidate::from_json(const nlohmann::json& j) {
  LongRopeCandidate c;
  c.lambda = j.at("lambda").get<std::vector<double>>();
  c.n_hat = j.at("n_hat").get<int64_t>();
  c.fitness = j.at("fitness").is_number() ? j.at("fitness").get<double>() : std::nan("");
  c.origin = j.value("origin", "");
  return c;
}

std::string longrope_violation(const LongRopeCandidate& c, double cap, const std::vector<int64_t>& n_hat_choices) {
  if (std::find(n_hat_choices.begin(), n_hat_choices.end(), c.n_hat) == n_hat_choices.end())
    return "n_hat " + std::to_string(c.n_hat) + " is not one of the allowed values";
  double prev = 1.0;
  for (size_t i = 0; i < c.lambda.size(); ++i) {
    double v = c.lambda[i];
    if (std::abs(v - on_grid(v)) > 1e-9) return "lambda[" + std::to_string(i) + "] is off the 0.01 grid";
    if (v < 1.0 - 1e-12 || v > on_grid(cap) + 1e-9) return "lambda[" + std::to_string(i) + "] is outside [1, cap]";
    if (v < prev - 1e-12) return "lambda decreases at " + std::to_string(i);
    prev = v;
  }
  return "";
}

LongRopeCandidate longrope_mutate(const LongRopeCandidate& p, double cap, double prob,
                                  const std::vector<int64_t>& n_hat_choices, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  LongRopeCandidate c = p;
  c.origin = "mutation";
  c.fitness = std::nan("");
  const size_t n = c.lambda.size();
  for (size_t i = 0; i < n; ++i) {
    if (u(rng) >= prob) continue;
    // Between its neighbours (as they are now), so the order is kept.
    double lo = i == 0 ? 1.0 : c.lambda[i - 1];
    double hi = i + 1 == n ? on_grid(cap) : c.lambda[i + 1];
    c.lambda[i] = on_grid(lo + (hi - lo) * u(rng));
  }
  if (u(rng) < prob) c.n_hat = n_hat_choices[rng() % n_hat_choices.size()];
  constrain(c.lambda, cap);
  return c;
}

LongRopeCandidate longrope_crossover(const LongRopeCandidate& a, const LongRopeCandidate& b, double prob,
                                     uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  LongRopeCandidate c = a;
  c.origin = "crossover";
  c.fitness = std::nan("");
  for (size_t i = 0; i < c.lambda.size(); ++i)
    if (u(rng) < prob) c.lambda[i] = b.lambda[i];
  if (u(rng) < 0.5) c.n_hat = b.n_hat;
  // Both parents are non-decreasing; a mix may not be: take the running maximum.
  for (size_t i = 1; i < c.lambda.size(); ++i) c.lambda[i] = std::max(c.lambda[i], c.lambda[i - 1]);
  return c;
}

namespace {

struct Evaluator {
  Pretrained base;
  nlohmann::json scaling_template;  // rope_scaling without the searched part
  bool short_mode;
  torch::Tensor x, y;               // [samples, L]
  double bytes_per_token = 1;

  double operator()(const LongRopeCandidate& c) {
    auto sc = scaling_template;
    sc[short_mode ? "short_factor" : "long_factor"] = c.lambda;
    if (!short_mode) sc["n_hat"] = c.n_hat;
    auto j = base.config["model"];
    j["rope_scaling"] = sc;
    auto cfg = ModelConfig::from_json(j, base.dir + "/config.json (search candidate)");
    CausalLM m(cfg);
    {
      torch::NoGradGuard ng;
      auto src = base.model->named_parameters();
      for (auto& p : m->named_parameters()) p.value().copy_(src[p.key()]);
    }
    m->eval();
    torch::NoGradGuard ng;
    auto st = m->new_state();
    st.hand_on = false;
    auto logits = m->forward(x, st);
    auto nll = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}));
    return nll.item<double>() / std::log(2.0) / bytes_per_token;
  }
};

}  // namespace

namespace {
void write_longctx_folder(const Pretrained& base, const LongRopeSearchOptions& o, const nlohmann::json& scaling,
                          const LongRopeCandidate& best, int64_t L);
void write_hf_longrope_folder(const std::string& in, const std::string& out, const nlohmann::json& scaling,
                              const LongRopeCandidate& best, bool short_factors, int64_t L, int64_t W);
}  // namespace

LongRopeSearchResult search_longrope(const LongRopeSearchOptions& o) {
  LCX_CHECK(!o.out.empty(), "search longrope: --out is required");
  LCX_CHECK(o.population >= 2 && o.parents >= 1 && o.parents <= o.population, "search longrope: population ",
            o.population, " and parents ", o.parents, " must satisfy 1 <= parents <= population");
  LCX_CHECK(o.samples >= 1, "search longrope: --samples must be >= 1");
  Evaluator ev;
  ev.base = load_pretrained(o.model);
  // A Hugging Face folder stays one: its rope_scaling "longrope" has no n_hat (transformers
  // interpolates every position), so the search keeps n_hat at 0 there.
  const bool hf = is_hf_folder(o.model);
  const std::vector<int64_t> n_hat_choices = hf ? std::vector<int64_t>{0} : o.n_hat_choices;
  ev.short_mode = o.short_factors;
  const auto& mc = ev.base.model_config;
  LCX_CHECK(mc.mixer_type() == "full_attention" || mc.mixer_type() == "sliding_window", "search longrope: ", o.model,
            " is a '", mc.mixer_type(), "' model; the search applies to attention models");
  auto existing = RopeScaling::parse(mc.rope_scaling, mc.max_position_embeddings, o.model + "/config.json");
  // The trained context: --original-length, else the model's own rope_scaling (a model already
  // extended and fine-tuned at a longer data.seq_len keeps it there), else data.seq_len.
  const int64_t W = o.original_length > 0       ? o.original_length
                    : existing.original_max > 0 ? existing.original_max
                                                : ev.base.config.value("data", nlohmann::json::object()).value("seq_len", 0);
  LCX_CHECK(W > 0, "search longrope: the model's config has no data.seq_len; pass --original-length");
  const int64_t L = o.short_factors ? W : o.target_length;
  LCX_CHECK(o.short_factors || L > W, "search longrope: --target-length ", L, " must exceed the original length ", W);
  const int64_t dim = mc.d_model / mc.n_heads, h = dim / 2;
  const double s = o.short_factors ? (existing.type == "longrope" ? existing.factor : 1.0) : double(L) / double(W);
  // Long factors: up to 1.25 s (the paper). Short factors: a lower cap, s itself.
  const double cap = o.cap > 0 ? o.cap : (o.short_factors ? std::max(1.0, s) : 1.25 * s);
  LCX_CHECK(cap >= 1, "search longrope: --cap ", cap, " must be >= 1");

  // The rope_scaling the candidates complete.
  nlohmann::json sc = {{"rope_type", "longrope"}, {"original_max_position_embeddings", W}};
  std::vector<double> ones(h, 1.0);
  if (o.short_factors) {
    LCX_CHECK(existing.type == "longrope", "search longrope --short: ", o.model,
              " has no longrope long factors yet; run the long search first");
    sc["factor"] = existing.factor;
    sc["long_factor"] = existing.long_factor;
    sc["n_hat"] = existing.n_hat;
  } else {
    sc["factor"] = s;
    sc["short_factor"] = existing.type == "longrope" ? existing.short_factor : ones;
  }
  ev.scaling_template = sc;

  // Samples: evenly spaced windows of L + 1 tokens of the search corpus.
  std::string text;
  for (auto& d : load_corpus(o.data)) text += d.text + "\n\n";
  auto toks = ev.base.tokenizer->encode(text);
  LCX_CHECK(int64_t(toks.size()) > (L + 1) * o.samples, "search longrope: corpus '", o.data, "' has ", toks.size(),
            " tokens, fewer than ", o.samples, " windows of ", L + 1);
  ev.bytes_per_token = double(text.size()) / double(toks.size());
  ev.x = torch::empty({o.samples, L}, torch::kInt64);
  ev.y = torch::empty({o.samples, L}, torch::kInt64);
  const int64_t stride = (int64_t(toks.size()) - L - 1) / o.samples;
  for (int64_t i = 0; i < o.samples; ++i)
    for (int64_t t = 0; t < L; ++t) {
      ev.x[i][t] = toks[i * stride + t];
      ev.y[i][t] = toks[i * stride + t + 1];
    }

  fs::create_directories(o.out);
  const std::string state_path = o.out + "/search_state.json";
  const nlohmann::json identity = {{"model", o.model}, {"length", L}, {"original", W}, {"short", o.short_factors},
                                   {"seed", o.seed}, {"cap", cap}, {"samples", o.samples}, {"data", o.data},
                                   {"population", o.population}};
  std::vector<LongRopeCandidate> pop;
  std::map<std::string, double> seen;  // key -> fitness
  LongRopeSearchResult res;
  int64_t start = 0;
  if (fs::exists(state_path)) {
    auto st = read_json_file(state_path);
    LCX_CHECK(st.at("identity") == identity, state_path, " belongs to another search (",
              st.at("identity").dump(), "); choose another --out");
    start = st.at("iteration").get<int64_t>();
    for (auto& c : st.at("population")) pop.push_back(LongRopeCandidate::from_json(c));
    for (auto& [k, v] : st.at("seen").items()) seen[k] = v.get<double>();
    res.best_by_iteration = st.at("best_by_iteration").get<std::vector<double>>();
  }
  auto evaluate = [&](LongRopeCandidate& c) {
    auto it = seen.find(c.key());
    if (it != seen.end()) {
      c.fitness = it->second;
      return;
    }
    c.fitness = ev(c);
    seen[c.key()] = c.fitness;
    ++res.evaluations;
  };
  auto by_fitness = [](const LongRopeCandidate& a, const LongRopeCandidate& b) { return a.fitness < b.fitness; };
  auto save_state = [&](int64_t iteration) {
    nlohmann::json popj = nlohmann::json::array();
    for (auto& c : pop) popj.push_back(c.to_json());
    write_file_atomic(state_path, nlohmann::json({{"identity", identity}, {"iteration", iteration}, {"population", popj},
                                                  {"seen", seen}, {"best_by_iteration", res.best_by_iteration}})
                                      .dump() + "\n");
  };

  if (pop.empty()) {
    // Seeds: PI, NTK and YaRN at scale s (the short search: plain RoPE and mild versions).
    auto seed_from = [&](const std::string& name, std::vector<double> l) {
      LongRopeCandidate c;
      c.lambda = std::move(l);
      constrain(c.lambda, cap);
      c.n_hat = 0;
      c.origin = name;
      return c;
    };
    const double ss = o.short_factors ? std::min(cap, 1.25) : s;  // short: mild PI/NTK/YaRN
    std::vector<double> pi(h, ss), ntk(h);
    for (int64_t i = 0; i < h; ++i) ntk[i] = std::pow(ss, 2.0 * i / double(dim - 2));
    std::vector<double> yarn(h, 1.0);
    if (ss > 1) {
      auto y = RopeScaling::parse({{"rope_type", "yarn"}, {"factor", ss}, {"original_max_position_embeddings", W}}, 0,
                                  "yarn seed")
                   .plan(dim, mc.rope_theta, L)
                   .lambda;
      for (int64_t i = 0; i < h; ++i) yarn[i] = y[i].item<double>();
    }
    std::vector<LongRopeCandidate> seeds = {seed_from("pi", pi), seed_from("ntk", ntk), seed_from("yarn", yarn)};
    if (o.short_factors) seeds.push_back(seed_from("plain", ones));
    // A model that already carries long factors (and was perhaps fine-tuned with them) also
    // seeds the search with them: the progressive step of a long search (with its n_hat), and
    // the start of a short search, which can then only improve on them at W.
    if (existing.type == "longrope" && int64_t(existing.long_factor.size()) == h) {
      auto c = seed_from(o.short_factors ? "long" : "previous", existing.long_factor);
      if (!o.short_factors) c.n_hat = hf ? 0 : existing.n_hat;
      if (longrope_violation(c, cap, n_hat_choices).empty()) seeds.push_back(c);
    }
    std::set<std::string> keys;
    for (auto& c : seeds)
      if (keys.insert(c.key()).second) pop.push_back(c);
    // Fill the first population with mutations of the seeds.
    for (uint64_t k = 0; int64_t(pop.size()) < o.population && k < uint64_t(100 * o.population); ++k) {
      auto c = longrope_mutate(seeds[k % seeds.size()], cap, o.mutate_p, n_hat_choices, mix_seed(o.seed, 0xf11, k));
      if (keys.insert(c.key()).second) pop.push_back(c);
    }
    Progress pb("search init", int64_t(pop.size()));
    for (size_t i = 0; i < pop.size(); ++i) {
      evaluate(pop[i]);
      if (o.progress) pb.update(int64_t(i + 1));
    }
    std::sort(pop.begin(), pop.end(), by_fitness);
    if (o.progress) pb.finish();
    save_state(0);
  }

  Progress bar("search", o.iterations);
  for (int64_t it = start; it < o.iterations; ++it) {
    std::vector<LongRopeCandidate> parents(pop.begin(), pop.begin() + std::min<size_t>(pop.size(), o.parents));
    std::set<std::string> keys;
    for (auto& c : pop) keys.insert(c.key());
    std::vector<LongRopeCandidate> kids;
    std::mt19937_64 rng(mix_seed(o.seed, 0x17e4, it));
    for (int64_t k = 0, tries = 0; k < o.mutations && tries < 100 * o.mutations; ++tries) {
      auto c = longrope_mutate(parents[rng() % parents.size()], cap, o.mutate_p, n_hat_choices, rng());
      if (keys.insert(c.key()).second) kids.push_back(c), ++k;
    }
    for (int64_t k = 0, tries = 0; k < o.crossovers && tries < 100 * o.crossovers && parents.size() > 1; ++tries) {
      size_t a = rng() % parents.size(), b = rng() % parents.size();
      if (a == b) continue;
      auto c = longrope_crossover(parents[a], parents[b], o.cross_p, rng());
      if (keys.insert(c.key()).second) kids.push_back(c), ++k;
    }
    for (auto& c : kids) {
      LCX_CHECK(longrope_violation(c, cap, n_hat_choices).empty(), "search longrope: internal error, candidate ",
                c.key(), ": ", longrope_violation(c, cap, n_hat_choices));
      evaluate(c);
      pop.push_back(c);
    }
    std::sort(pop.begin(), pop.end(), by_fitness);
    if (int64_t(pop.size()) > o.population) pop.resize(o.population);
    res.best_by_iteration.push_back(pop[0].fitness);
    save_state(it + 1);
    if (o.progress) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "best %.4f bits/byte (%s)", pop[0].fitness, pop[0].origin.c_str());
      bar.update(it + 1, buf);
    }
  }
  if (o.progress) bar.finish();
  res.best = pop[0];

  // The output folder: the model with the factors in its config.
  res.length = L;
  res.hf = hf;
  if (hf) {
    write_hf_longrope_folder(o.model, o.out, ev.scaling_template, res.best, o.short_factors, L, W);
  } else {
    write_longctx_folder(ev.base, o, ev.scaling_template, res.best, L);
  }
  write_file_atomic(o.out + "/search_result.json",
                    nlohmann::json({{"best", res.best.to_json()}, {"best_by_iteration", res.best_by_iteration},
                                    {"length", L}, {"original_length", W}, {"scale", s}, {"cap", cap},
                                    {"short_factors", o.short_factors}, {"data", o.data}, {"samples", o.samples}})
                            .dump(2) + "\n");
  return res;
}

namespace {

void write_longctx_folder(const Pretrained& base, const LongRopeSearchOptions& o, const nlohmann::json& scaling,
                          const LongRopeCandidate& best, int64_t L) {
  auto cfg = base.config;
  auto best_sc = scaling;
  best_sc[o.short_factors ? "short_factor" : "long_factor"] = best.lambda;
  if (!o.short_factors) best_sc["n_hat"] = best.n_hat;
  cfg["model"]["rope_scaling"] = best_sc;
  if (!o.short_factors) cfg["model"]["max_position_embeddings"] = L;
  ModelConfig::from_json(cfg["model"], o.out + "/config.json");  // validates
  for (auto name : {"model.safetensors", "tokenizer.model", "split.json"}) {
    auto src = fs::path(o.model) / name;
    if (fs::exists(src) && fs::absolute(src) != fs::absolute(fs::path(o.out) / name))
      write_file_atomic(o.out + "/" + name, read_file(src.string()));
  }
  write_file_atomic(o.out + "/config.json", cfg.dump(2) + "\n");
}

void write_hf_longrope_folder(const std::string& in, const std::string& out, const nlohmann::json& scaling,
                              const LongRopeCandidate& best, bool short_factors, int64_t L, int64_t W) {
  // Every file of the folder but its config (weights, shards and their index, tokenizer files,
  // generation_config.json), each copied atomically; then config.json with the factors.
  const auto same = [](const fs::path& a, const fs::path& b) {
    std::error_code ec;
    return fs::equivalent(a, b, ec);
  };
  for (auto& e : fs::directory_iterator(in)) {
    const auto name = e.path().filename().string();
    if (!e.is_regular_file() || name == "config.json" || name == "search_state.json" || name == "search_result.json")
      continue;
    const auto dst = fs::path(out) / name;
    if (same(e.path(), dst)) continue;
    const auto tmp = dst.string() + ".tmp";
    fs::copy_file(e.path(), tmp, fs::copy_options::overwrite_existing);
    fs::rename(tmp, dst);
  }
  auto hf = read_json_file(in + "/config.json");
  const bool v5 = hf.contains("rope_parameters");  // transformers v5 spells rope_scaling so, with rope_theta inside
  auto rs = v5 ? hf["rope_parameters"] : hf.value("rope_scaling", nlohmann::json());
  if (!rs.is_object()) rs = nlohmann::json::object();
  for (auto k : {"factor", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
                 "attention_factor", "original_max_position_embeddings", "type"})
    rs.erase(k);
  rs["rope_type"] = "longrope";
  rs["long_factor"] = short_factors ? scaling["long_factor"] : nlohmann::json(best.lambda);
  rs["short_factor"] = short_factors ? nlohmann::json(best.lambda) : scaling["short_factor"];
  // Phi-3's layout: the original length at the top level, and the factor max / original.
  if (v5) {
    rs["original_max_position_embeddings"] = W;
    hf["rope_parameters"] = rs;
  } else {
    hf["original_max_position_embeddings"] = W;
    hf["rope_scaling"] = rs;
  }
  if (!short_factors) hf["max_position_embeddings"] = L;
  const auto check = hf_to_longctx_config(hf, out + "/config.json");  // reads back as searched
  const auto got = RopeScaling::parse(check["model"]["rope_scaling"], check["model"].value("max_position_embeddings", int64_t(0)),
                                      out + "/config.json");
  auto searched = scaling;
  searched[short_factors ? "short_factor" : "long_factor"] = best.lambda;
  const auto want = RopeScaling::parse(searched, L, "search");
  LCX_CHECK(got.type == "longrope" && got.original_max == W && std::abs(got.factor - want.factor) < 1e-9 &&
                got.long_factor == want.long_factor && got.short_factor == want.short_factor,
            "search longrope: the Hugging Face config written does not read back as the factors searched");
  write_file_atomic(out + "/config.json", hf.dump(2) + "\n");
}

}  // namespace

}  // namespace longctx
