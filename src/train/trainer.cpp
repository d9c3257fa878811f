#include "train/trainer.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <algorithm>
#include <iostream>
#include <unistd.h>

#include "eval/passkey.h"
#include "io/fs.h"
#include "io/json_file.h"
#include "train/distributed.h"
#include "model/pretrained.h"
#include "train/data.h"
#include "train/optim.h"
#include "train/selective.h"
#include "io/safetensors.h"
#include "util/error.h"
#include "util/plot.h"
#include "util/system.h"

namespace fs = std::filesystem;

namespace longctx {

namespace {

int64_t latest_checkpoint(const std::string& out) {
  int64_t best = -1;
  if (!fs::is_directory(out)) return best;
  for (auto& e : fs::directory_iterator(out)) {
    auto n = e.path().filename().string();
    if (n.rfind("checkpoint-", 0) == 0 && fs::exists(e.path() / "trainer_state.json"))
      best = std::max<int64_t>(best, std::atoll(n.c_str() + 11));
  }
  return best;
}

// Moves every tensor of a state to `dev` (a carried state loaded from a checkpoint).
void state_to(ModelState& s, const torch::Device& dev) {
  auto move = [&](State& st) {
    for (auto& [name, t] : std::map<std::string, torch::Tensor>(st.tensors())) st.set(name, t.to(dev));
  };
  move(s.head);
  for (auto& l : s.layers) move(l);
}

// Mean next-token loss (nats) over the fixed validation batches.
double evaluate(CausalLM& model, const std::vector<std::pair<torch::Tensor, torch::Tensor>>& batches) {
  torch::NoGradGuard ng;
  model->eval();
  double sum = 0;
  int64_t n = 0;
  auto dev = model->device();
  for (auto& [x, y] : batches) {
    auto st = model->new_state();
    auto logits = model->forward(x.to(dev), st);
    auto l = torch::nn::functional::cross_entropy(
        logits.reshape({-1, logits.size(-1)}), y.to(dev).reshape({-1}),
        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    sum += l.item<double>();
    n += y.numel();
  }
  model->train();
  return sum / std::max<int64_t>(n, 1);
}

void write_tokenizer(const RunConfig& cfg, const Tokenizer& tok, const std::string& dir) { tok.save(dir); }

void write_model_files(const std::string& dir, const RunConfig& cfg, CausalLM& model, const Tokenizer& tok,
                       const nlohmann::json& split, int64_t step) {
  write_file_atomic(dir + "/config.json", nlohmann::json(cfg.to_json()).dump(2) + "\n");
  save_weights(dir + "/model.safetensors", model, "F32", {{"step", std::to_string(step)}});
  write_tokenizer(cfg, tok, dir);
  write_file_atomic(dir + "/split.json", split.dump(1) + "\n");
}

void plot_log(const std::string& out) {
  std::ifstream f(out + "/log.jsonl");
  Series tr{"train loss (avg over log interval)", {}}, va{"validation loss", {}};
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    if (j.contains("loss")) tr.points.push_back({j["step"].get<double>(), j["loss"].get<double>()});
    if (j.contains("val_loss")) va.points.push_back({j["step"].get<double>(), j["val_loss"].get<double>()});
  }
  // Mixer diagnostics (e.g. Infini-attention's gates): mean over heads per layer and name.
  std::map<std::string, Series> diag;
  f.clear();
  f.seekg(0);
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("mixers")) continue;
    for (auto& [name, vals] : j["mixers"].items()) {
      double m = 0;
      for (auto& v : vals) m += v.get<double>();
      auto& sr = diag[name];
      sr.label = name + " (mean over heads)";
      sr.points.push_back({j["step"].get<double>(), m / std::max<size_t>(1, vals.size())});
    }
  }
  if (!diag.empty()) {
    std::vector<Series> v;
    for (auto& [n, sr] : diag) v.push_back(sr);
    PlotOptions g;
    g.title = "mixer diagnostics: " + fs::path(out).filename().string();
    g.xlabel = "step";
    g.ylabel = "value (sigmoid of the memory gate)";
    write_file_atomic(out + "/mixers.svg", svg_line_plot(v, g));
  }
  // RHO-1 token categories (train.category_tokens) and kept/unkept losses (train.selective).
  std::map<std::string, Series> cats, sel;
  f.clear();
  f.seekg(0);
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    if (j.contains("categories"))
      for (auto& [name, v] : j["categories"].items()) {
        cats[name].label = name;
        cats[name].points.push_back({j["step"].get<double>(), 100 * v.get<double>()});
      }
    for (const char* k : {"kept_loss", "unkept_loss"})
      if (j.contains(k)) {
        sel[k].label = std::string(k) == "kept_loss" ? "kept tokens" : "unkept tokens";
        sel[k].points.push_back({j["step"].get<double>(), j[k].get<double>()});
      }
  }
  if (!cats.empty()) {
    std::vector<Series> v;
    for (auto& [n, sr] : cats) v.push_back(sr);
    PlotOptions g;
    g.title = "token categories since the first evaluation: " + fs::path(out).filename().string();
    g.xlabel = "step";
    g.ylabel = "% of probe tokens";
    write_file_atomic(out + "/categories.svg", svg_line_plot(v, g));
  }
  if (!sel.empty()) {
    std::vector<Series> v;
    for (auto& [n, sr] : sel) v.push_back(sr);
    PlotOptions g;
    g.title = "selective training, loss by side: " + fs::path(out).filename().string();
    g.xlabel = "step";
    g.ylabel = "loss (nats per token)";
    write_file_atomic(out + "/selection.svg", svg_line_plot(v, g));
  }
  PlotOptions o;
  o.title = "training loss: " + fs::path(out).filename().string();
  o.xlabel = "step";
  o.ylabel = "loss (nats per token)";
  write_file_atomic(out + "/loss.svg", svg_line_plot({tr, va}, o));
}

// Keeps the log consistent with a resumed run: drop entries after the checkpoint's step.
void truncate_log(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream f(path);
  std::string line, kept;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("step") && j["step"].get<int64_t>() <= step) kept += line + "\n";
  }
  f.close();
  write_file_atomic(path, kept);
}

std::string fnv_hex(const std::string& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

// The probe of the token categories: windows spread evenly over the training stream.
std::vector<std::pair<torch::Tensor, torch::Tensor>> probe_batches(const TokenStream& s, int64_t tokens, int64_t batch,
                                                                   int64_t seq) {
  int64_t nb = (tokens + batch * seq - 1) / (batch * seq);
  return sequential_batches(s, batch, seq, nb);
}

using Batches = std::vector<std::pair<torch::Tensor, torch::Tensor>>;

int64_t count_targets(const Batches& v) {
  int64_t n = 0;
  for (auto& b : v) n += b.second.numel();
  return n;
}

// Per-target cross entropy [N] of logits [.., V] against targets [..].
torch::Tensor per_token_loss(const torch::Tensor& logits, const torch::Tensor& y) {
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}),
                                              torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
}

// One training run, in the phases train() calls in order: open the folder, the tokenizer, the
// data, the selective reference, the model and optimizer, the restore (or a fresh start), then
// the steps, each with its log line, evaluation and checkpoint.
class Run {
 public:
  Run(const RunConfig& cfg, const TrainOptions& opt) : cfg_(cfg), t_(cfg.train), opt_(opt) {
    const auto env = DistEnv::from_environment();
    if (env.world > 1) {
      dist_ = std::make_unique<Dist>(env, opt.backend, std::chrono::milliseconds(int64_t(opt.timeout_s * 1000)));
      lead_ = env.rank == 0;
      quiet_ = opt.quiet || !lead_;
    } else {
      quiet_ = opt.quiet;
    }
  }

  TrainResult go() {
    open_folder();
    check_distributed();
    make_tokenizer();
    make_data();
    load_reference();
    make_model();
    restore_or_start();
    return steps();
  }

 private:
  // ---- phases ----
  int world() const { return dist_ ? dist_->world() : 1; }
  int rank() const { return dist_ ? dist_->rank() : 0; }
  // Waits for every rank after what rank 0 alone does (evaluations, checkpoints, the reference
  // losses): the others wait up to the evaluation timeout, not the collectives' one.
  void sync_after_lead(const std::string& what) {
    if (dist_) dist_->barrier(what, std::chrono::milliseconds(int64_t(opt_.eval_timeout_s * 1000)));
  }

  // Data parallel: each rank trains on its rows of every global batch (batch_size / world), so
  // the global batch and its order are the one-process run's.
  void check_distributed() {
    if (!dist_) return;
    LCX_CHECK(t_.batch_size % world() == 0, "train.batch_size ", t_.batch_size, " is not divisible by the ", world(),
              " ranks (each rank trains on batch_size / world rows of every batch)");
    LCX_CHECK(t_.carry_fraction <= 0, "train.carry_fraction with ", world(),
              " ranks: carried states are per row and are not split across ranks yet; train it on one process");
    LCX_CHECK(!(cfg_.model.mixer_type() == "fam" && cfg_.model.mixer.value("state_passing", 0.0) > 0),
              "model.mixer.state_passing with ", world(), " ranks: FAM's passed memory is per row; train it on one process");
    if (!quiet_ || lead_)
      std::fprintf(stderr, "data parallel: %d ranks (%s), %lld rows of each batch per rank\n", world(),
                   dist_->env().master_addr.c_str(), (long long)(t_.batch_size / world()));
  }

  // Rank r's rows of a global batch.
  Batch shard(const Batch& b) const {
    if (!dist_) return b;
    const int64_t n = b.x.size(0) / world(), r0 = n * rank();
    Batch s;
    s.x = b.x.narrow(0, r0, n), s.y = b.y.narrow(0, r0, n);
    if (b.w.defined()) s.w = b.w.narrow(0, r0, n);
    if (b.valid.defined()) s.valid = b.valid.narrow(0, r0, n);
    return s;
  }

  void open_folder() {
    LCX_CHECK(!opt_.out.empty(), "train: --out is required");
    fs::create_directories(opt_.out);
    resume_step_ = latest_checkpoint(opt_.out);
    if (opt_.resume) {
      LCX_CHECK(resume_step_ >= 0, "train --resume: no checkpoint-N folder in ", opt_.out, " to resume from");
      check_same_model();
    } else {
      LCX_CHECK(resume_step_ < 0, "train: ", opt_.out, " already holds checkpoint-", resume_step_,
                "; pass --resume to continue it, or choose another --out");
    }
    log_path_ = opt_.out + "/log.jsonl";
    probe_path_ = opt_.out + "/probe_losses.safetensors";
  }

  // A resumed run keeps its model: a config (or --set) that changes a model field would load the
  // checkpoint's weights into another model, which may even fit (a segment length, a mixer
  // option). Refused, naming the fields that differ.
  void check_same_model() const {
    const std::string path = opt_.out + "/config.json";
    if (!fs::exists(path)) return;  // an older run folder: the weights' shapes are still checked on load
    auto saved = read_json_file(path);
    if (!saved.contains("model")) return;
    auto was = ModelConfig::from_json(saved["model"], path).to_json(), now = cfg_.model.to_json();
    if (was == now) return;
    std::string diff;
    auto patch = nlohmann::json::diff(was, now);
    for (auto& op : patch) {
      auto field = "model" + op["path"].get<std::string>();  // a JSON pointer: /mixer/segment
      std::replace(field.begin(), field.end(), '/', '.');
      diff += (diff.empty() ? "" : ", ") + field;
    }
    LCX_CHECK(false, "train --resume: the config changes the model of ", opt_.out, " (", diff,
              "); resume with the run's own config (omit --config), or start a new run with train.init_from=",
              opt_.out);
  }

  // Bytes, an existing SentencePiece model, or one trained on the training split.
  void make_tokenizer() {
    if (cfg_.tokenizer.type == "byte") {
      tok_ = std::make_unique<ByteTokenizer>();
    } else if (opt_.resume || !cfg_.tokenizer.path.empty()) {
      tok_ = std::make_unique<SentencePieceTokenizer>(opt_.resume ? opt_.out + "/tokenizer.model" : cfg_.tokenizer.path);
    } else {
      auto docs = load_corpus(cfg_.data.train[0]);
      auto split = split_by_document(docs, cfg_.data.val_docs, cfg_.data.split_seed);
      std::vector<std::string> texts;
      for (auto& d : docs)
        if (std::binary_search(split.train.begin(), split.train.end(), d.name)) texts.push_back(d.text);
      if (lead_) SentencePieceTokenizer::train(texts, opt_.out + "/tokenizer", static_cast<int>(cfg_.tokenizer.vocab_size));
      sync_after_lead("waiting for rank 0's tokenizer");
      tok_ = std::make_unique<SentencePieceTokenizer>(opt_.out + "/tokenizer.model");
    }
    LCX_CHECK(tok_->vocab_size() <= cfg_.model.vocab_size, "model.vocab_size ", cfg_.model.vocab_size,
              " is smaller than the tokenizer's ", tok_->vocab_size());
  }

  void make_data() {
    data_ = prepare_data(cfg_.data, *tok_);
    sampler_ = std::make_unique<TrainBatches>(cfg_.data, data_.train, *tok_, t_.batch_size, t_.seed);
    const auto& sel = t_.selective;
    LCX_CHECK(!sel.enabled() || cfg_.data.passkey.fraction <= 0,
              "train.selective cannot be combined with data.passkey (weighted passkey losses)");
    LCX_CHECK(!sel.enabled() || cfg_.data.ruler.fraction <= 0,
              "train.selective cannot be combined with data.ruler (weighted task answers)");
    windowed_ = t_.tbptt > 0 || t_.carry_fraction > 0;
    LCX_CHECK(!windowed_ || !sel.enabled(), "train.tbptt and train.carry_fraction cannot be combined with train.selective");
    if (cfg_.data.ruler.fraction > 0 && !quiet_) {
      std::string names;
      for (auto& n : sampler_->ruler_tasks()) names += (names.empty() ? "" : ", ") + n;
      std::fprintf(stderr, "RULER mixture (%.0f%% of rows, %lld-%lld tokens): %s\n", 100 * cfg_.data.ruler.fraction,
                   (long long)cfg_.data.ruler.min_length, (long long)cfg_.data.ruler.max_length, names.c_str());
      for (auto& why : sampler_->ruler_left_out()) std::fprintf(stderr, "  left out: %s\n", why.c_str());
    }
    if (t_.device == "cuda") {
      LCX_CHECK(torch::cuda::is_available(), "train.device is \"cuda\" but this libtorch sees no CUDA device");
      device_ = torch::Device(torch::kCUDA);
    }
    // Periodic evaluations: eval_batches batches spread over the whole validation split. The
    // last step evaluates every window of the split.
    val_batches_ = sequential_batches(data_.val, t_.batch_size, cfg_.data.seq_len, t_.eval_batches);
    LCX_CHECK(!val_batches_.empty(), "validation split has too few tokens for one sequence of ", cfg_.data.seq_len);
    bytes_per_token_ = double(data_.val.bytes) / double(std::max<size_t>(1, data_.val.tokens.size()));
    // Token categories: a fixed probe of training tokens, scored at every evaluation.
    if (t_.category_tokens > 0)
      probe_ = probe_batches(data_.train, t_.category_tokens, t_.batch_size, cfg_.data.seq_len);
  }

  // The reference model of selective training: frozen, evaluated without gradients; its losses
  // of every batch optionally computed once and cached.
  void load_reference() {
    const auto& sel = t_.selective;
    if (!sel.enabled() || sel.reference.empty()) return;
    ref_ = load_pretrained(sel.reference);
    LCX_CHECK(ref_.tokenizer->vocab_size() == tok_->vocab_size() && ref_.model_config.vocab_size == cfg_.model.vocab_size,
              "train.selective.reference: ", sel.reference, " has vocabulary ", ref_.model_config.vocab_size,
              " (tokenizer ", ref_.tokenizer->vocab_size(), "), this run ", cfg_.model.vocab_size, " (tokenizer ",
              tok_->vocab_size(), ")");
    ref_.model->to(device_);
    ref_.model->eval();
    for (auto& p : ref_.model->parameters()) p.set_requires_grad(false);
    if (sel.cache.empty()) return;
    std::string key = fnv_hex(read_file(sel.reference + "/model.safetensors")) + ":" +
                      fnv_hex(nlohmann::json(cfg_.to_json()["data"]).dump()) + ":seed=" + std::to_string(t_.seed);
    ref_cache_ = std::make_unique<ReferenceLossCache>(sel.cache, key, t_.steps, t_.grad_accum, t_.batch_size,
                                                      cfg_.data.seq_len);
    if (!lead_) {  // rank 0 computes the cache (or finds it); the others read it
      sync_after_lead("waiting for rank 0's reference losses");
      LCX_CHECK(ref_cache_->load(), "train.selective.cache: ", sel.cache, " is not readable by rank ", rank(),
                " (the ranks need one filesystem for it)");
      return;
    }
    if (ref_cache_->load()) {
      if (!quiet_) std::fprintf(stderr, "reference losses read from %s\n", sel.cache.c_str());
      sync_after_lead("sharing the reference losses");
      return;
    }
    double t0 = now_seconds();
    Progress pb("reference losses", t_.steps);
    for (int64_t s = 0; s < t_.steps; ++s) {
      for (int64_t m = 0; m < t_.grad_accum; ++m) {
        auto b = sampler_->get(s, m);
        ref_cache_->set(s, m, token_losses(ref_.model, b.x, b.y));
      }
      if (!quiet_) pb.update(s + 1);
    }
    ref_cache_->save();
    sync_after_lead("sharing the reference losses");
    if (!quiet_) {
      pb.finish();
      std::fprintf(stderr, "reference losses of %lld steps cached in %s (%.1f s)\n", (long long)t_.steps,
                   sel.cache.c_str(), now_seconds() - t0);
    }
  }

  void make_model() {
    torch::manual_seed(t_.seed);
    model_ = CausalLM(cfg_.model);
    model_->to(device_);
    model_->train();
    if (!t_.trainable.empty())
      LCX_CHECK(freeze_except(named_weights(model_), t_.trainable) > 0, "train.trainable: no parameter of this model matches");
    auto groups = make_param_groups(named_weights(model_), t_);
    optimizer_ = std::make_unique<AdamW>(groups, t_.beta1, t_.beta2, t_.eps);
    for (auto& g : groups) params_.insert(params_.end(), g.params.begin(), g.params.end());
    // What the mixers keep between training calls (their random draws, FAM's passed memory):
    // saved with every checkpoint, so a resumed run draws and passes what the uninterrupted one did.
    run_memory_ = model_->new_state();
    carried_.resize(t_.carry_fraction > 0 ? t_.grad_accum : 0);
    if (dist_) reducer_ = std::make_unique<GradReducer>(*dist_, params_);
  }

  static std::string carry_path(const std::string& dir, int64_t micro) {
    return dir + "/carry-" + std::to_string(micro) + ".safetensors";
  }
  static std::string run_memory_path(const std::string& dir) { return dir + "/run_memory.safetensors"; }

  // A resumed run reads everything the checkpoint holds: weights, optimizer, step, the log up to
  // it, the probe losses, the carried states and the run memory. A fresh one starts from
  // init_from's weights or the seed's initialisation.
  void restore_or_start() {
    if (opt_.resume) {
      std::string ck = opt_.out + "/checkpoint-" + std::to_string(resume_step_);
      load_weights(ck + "/model.safetensors", model_);
      optimizer_->load(ck + "/optimizer.safetensors");
      auto st = read_json_file(ck + "/trainer_state.json");
      start_ = st["step"].get<int64_t>();
      LCX_CHECK(optimizer_->steps() == start_, ck, ": optimizer step ", optimizer_->steps(), " != trainer step ", start_);
      if (lead_) truncate_log(log_path_, start_);
      if (!probe_.empty() && fs::exists(probe_path_)) {
        auto f = load_safetensors(probe_path_);
        for (auto& [name, tensor] : f.tensors) {
          double s = std::atof(name.c_str() + 5);  // "step_N"
          if (s <= start_) probe_steps_.push_back(s), probe_losses_.push_back(tensor.to(torch::kFloat32));
        }
      }
      if (t_.carry_fraction > 0) {
        have_carry_ = true;
        for (int64_t m = 0; m < t_.grad_accum && have_carry_; ++m) {
          if (!fs::exists(carry_path(ck, m))) {
            have_carry_ = false;
            break;
          }
          carried_[m] = load_state(carry_path(ck, m), *model_);
          state_to(carried_[m], device_);
        }
      }
      if (fs::exists(run_memory_path(ck))) {
        run_memory_ = load_state(run_memory_path(ck), cfg_.model);
        state_to(run_memory_, device_);
      }
      if (!quiet_) std::fprintf(stderr, "resuming %s from step %lld\n", opt_.out.c_str(), (long long)start_);
    } else {
      if (!t_.init_from.empty()) {
        // The same weights on every rank (each reads the file; the ranks share a filesystem).
        std::string w = t_.init_from + "/model.safetensors";
        LCX_CHECK(std::filesystem::exists(w), "train.init_from: ", w, " does not exist");
        load_weights(w, model_, t_.init_ignore, t_.init_copy);
        if (!quiet_) std::fprintf(stderr, "initialised from %s\n", w.c_str());
      }
      if (lead_) write_file_atomic(log_path_, "");
    }
    if (lead_) write_model_files(opt_.out, cfg_, model_, *tok_, data_.split_json(), start_);
    if (!quiet_)
      std::fprintf(stderr,
                   "model: %s, %.2fM parameters; data: %zu train tokens, %zu validation tokens (%zu documents held out)\n",
                   cfg_.model.mixer_type().c_str(), model_->num_parameters() / 1e6, data_.train.tokens.size(),
                   data_.val.tokens.size(), data_.split.val.size());
    if (lead_) log_.open(log_path_, std::ios::app);
  }

  TrainResult steps() {
    int64_t end = t_.steps;
    if (opt_.stop_after > 0) end = std::min(end, start_ + opt_.stop_after);
    if (opt_.stop_at > 0) end = std::min(end, opt_.stop_at);
    bar_ = std::make_unique<Progress>("train", t_.steps);
    t_start_ = t_log_ = now_seconds();
    for (int64_t step = start_; step < end; ++step) {
      const double lr = lr_at(t_, step);
      train_step(step, lr);
      const int64_t done = step + 1;
      if (done % t_.log_every == 0 || done == end) log_progress(step, done, lr);
      const bool eval = (t_.eval_every > 0 && done % t_.eval_every == 0) || done == t_.steps;
      const bool ck = (t_.checkpoint_every > 0 && done % t_.checkpoint_every == 0) || done == end;
      if (eval && lead_) evaluate_and_log(done);
      if (ck && lead_) checkpoint(done);
      if (eval || ck) sync_after_lead("waiting for rank 0's evaluation and checkpoint at step " + std::to_string(done));
    }
    res_.steps_done = end;
    res_.tokens = end * tokens_per_step();
    if (!quiet_ && end == t_.steps) bar_->finish();
    return res_;
  }

  // ---- one step ----
  int64_t tokens_per_step() const { return t_.batch_size * t_.grad_accum * cfg_.data.seq_len; }

  // What a micro-batch adds to the log, summed over ranks at the end of the step: the answers'
  // loss (sum, count), and RHO-1's kept and unkept tokens' losses (sums, counts) and the tokens
  // scored.
  struct MicroStats {
    double ans_sum = 0, ans_n = 0, kept_sum = 0, kept_n = 0, unkept_sum = 0, unkept_n = 0, scored = 0;
    static constexpr int kFields = 7;
  };

  void train_step(int64_t step, double lr) {
    if (dist_) dist_->mark(step);
    double step_loss = 0;
    std::vector<MicroStats> stats(size_t(t_.grad_accum));
    // Rows of this step start from the previous step's final states (detached), or fresh.
    std::mt19937_64 carry_rng(mix_seed(t_.seed ^ 0x6361727279ull, uint64_t(step)));
    const bool carry = have_carry_ && std::uniform_real_distribution<double>(0, 1)(carry_rng) < t_.carry_fraction;
    for (int64_t micro = 0; micro < t_.grad_accum; ++micro) {
      auto global = sampler_->get(step, micro);
      auto batch = shard(global);
      auto st = carry ? std::move(carried_[micro]) : model_->new_state();
      st.run_memory = &run_memory_.layers;
      st.hand_on = t_.carry_fraction > 0;  // otherwise each row starts and ends here
      const bool last = micro + 1 == t_.grad_accum;
      auto& ms = stats[size_t(micro)];
      step_loss += (windowed_ ? micro_windowed(batch, global, st, last, ms)
                              : micro_one_pass(batch, global, st, step, micro, last, ms)) /
                   t_.grad_accum;
      if (t_.carry_fraction > 0) carried_[micro] = std::move(st);
    }
    if (reducer_) {
      reducer_->finish(step);
      // The loss and the log's sums over ranks, in one all-reduce.
      auto v = torch::zeros({1 + MicroStats::kFields * t_.grad_accum}, torch::kFloat64);
      auto a = v.accessor<double, 1>();
      a[0] = step_loss;
      for (size_t m = 0; m < stats.size(); ++m) {
        const double f[] = {stats[m].ans_sum,    stats[m].ans_n,    stats[m].kept_sum, stats[m].kept_n,
                            stats[m].unkept_sum, stats[m].unkept_n, stats[m].scored};
        for (int k = 0; k < MicroStats::kFields; ++k) a[1 + MicroStats::kFields * int64_t(m) + k] = f[k];
      }
      dist_->allreduce_sum(v, "the loss's all-reduce at step " + std::to_string(step));
      step_loss = a[0];
      for (size_t m = 0; m < stats.size(); ++m) {
        double* f[] = {&stats[m].ans_sum,    &stats[m].ans_n,    &stats[m].kept_sum, &stats[m].kept_n,
                       &stats[m].unkept_sum, &stats[m].unkept_n, &stats[m].scored};
        for (int k = 0; k < MicroStats::kFields; ++k) *f[k] = a[1 + MicroStats::kFields * int64_t(m) + k];
      }
    }
    for (auto& ms : stats) {
      if (ms.ans_n > 0) answer_acc_ += ms.ans_sum / ms.ans_n, ++answer_n_;
      if (ms.scored > 0) {
        kept_acc_ += ms.kept_n > 0 ? ms.kept_sum / ms.kept_n : 0.0;
        unkept_acc_ += ms.unkept_n > 0 ? ms.unkept_sum / ms.unkept_n : 0.0;
        frac_acc_ += ms.kept_n / ms.scored;
        ++sel_n_;
      }
    }
    LCX_CHECK(std::isfinite(step_loss), "train: loss is ", step_loss, " at step ", step,
              " (try a lower train.lr or a smaller train.clip)");
    last_gnorm_ = clip_grad_norm(params_, t_.clip);
    optimizer_->step(lr);
    optimizer_->zero_grad();
    have_carry_ = t_.carry_fraction > 0;  // this step's rows left their states in `carried_`
    loss_acc_ += step_loss;
    ++loss_n_;
    res_.final_loss = step_loss;
  }

  // The step's last backward: with several ranks, its gradients go out in buckets as it runs.
  void backward(const torch::Tensor& loss, bool last) {
    if (reducer_ && last) reducer_->arm();
    loss.backward();
  }

  // The weighted loss of one micro-batch's targets (passkey answers weigh more, unpredictable
  // keys nothing): sum(per * w) / denom, denom the global batch's weight; the answers' loss
  // (sum and count) goes to the log.
  torch::Tensor weighted(const torch::Tensor& per, const torch::Tensor& w, double denom, MicroStats& ms) {
    auto ans = (w > 1).to(per.scalar_type());
    ms.ans_sum += (per.detach() * ans).sum().item<double>(), ms.ans_n += ans.sum().item<double>();
    return (per * w).sum() / denom;
  }

  // Truncated back-propagation through time (windows of tbptt tokens), or a carried state: the
  // same loss as one pass, the gradient stopping at window edges. `global`: the whole batch
  // (the loss's denominator); `batch`: this rank's rows of it.
  double micro_windowed(const Batch& batch, const Batch& global, ModelState& st, bool last_micro, MicroStats& ms) {
    const int64_t T = batch.x.size(1), W = t_.tbptt > 0 ? t_.tbptt : T;
    auto x = batch.x.to(device_), y = batch.y.to(device_);
    auto w = batch.w.defined() ? batch.w.to(device_) : torch::Tensor();
    const double denom = w.defined() ? std::max(1e-6, global.w.sum().item<double>()) : double(global.y.numel());
    double total = 0;
    for (int64_t w0 = 0; w0 < T; w0 += W) {
      const int64_t len = std::min(W, T - w0);
      st.hand_on = t_.carry_fraction > 0 || w0 + len < T;
      auto per = per_token_loss(model_->forward(x.narrow(1, w0, len), st, /*training=*/true), y.narrow(1, w0, len));
      auto loss = w.defined() ? weighted(per, w.narrow(1, w0, len).reshape({-1}), denom, ms) : per.sum() / denom;
      backward(loss / double(t_.grad_accum), last_micro && w0 + len >= T);
      total += loss.item<double>();
      st.detach_();
    }
    return total;
  }

  // The whole row in one call: plain, weighted, or RHO-1's selected tokens. With several ranks
  // each computes its rows' share of the global batch's loss (the share of a plain mean is
  // rows / global rows; RHO-1 selects from the whole batch's scores, gathered).
  double micro_one_pass(const Batch& batch, const Batch& global, ModelState& st, int64_t step, int64_t micro,
                        bool last_micro, MicroStats& ms) {
    auto logits = model_->forward(batch.x.to(device_), st, /*training=*/true);
    const auto& sel = t_.selective;
    torch::Tensor loss;
    if (sel.enabled()) {  // RHO-1: the loss over the kept tokens only
      auto per = per_token_loss(logits, batch.y.to(device_));
      auto valid = batch.valid.to(device_).reshape({-1});
      auto gvalid = global.valid.to(device_).reshape({-1});
      torch::Tensor mask;  // over the global batch
      if (sel.select == "random") {
        mask = select_random(gvalid.cpu(), sel.keep, mix_seed(t_.seed ^ 0x72616e64ull, step, micro)).to(device_);
      } else {
        double r0 = now_seconds();
        torch::Tensor rl;
        if (ref_cache_) {  // the global batch's rows: this rank's
          rl = ref_cache_->get(step, micro);
          if (dist_) rl = rl.narrow(0, batch.x.size(0) * rank(), batch.x.size(0));
        } else {
          rl = token_losses(ref_.model, batch.x, batch.y);
        }
        ref_s_ += now_seconds() - r0;
        auto score = per.detach() - rl.to(device_).reshape({-1});
        if (dist_) score = dist_->allgather_cat(score, "RHO-1's scores at step " + std::to_string(step));
        mask = select_top(score, gvalid, sel.keep);
      }
      const double kept_all = mask.sum().item<double>();
      LCX_CHECK(kept_all > 0, "selective: no token kept in this batch");
      if (dist_) mask = mask.narrow(0, per.numel() * rank(), per.numel());
      auto m = mask.to(per.scalar_type());
      loss = (per * m).sum() / kept_all;
      auto d = per.detach();
      auto unk = valid.to(per.scalar_type()) * (1 - m);
      ms.kept_sum += (d * m).sum().item<double>(), ms.kept_n += m.sum().item<double>();
      ms.unkept_sum += (d * unk).sum().item<double>(), ms.unkept_n += unk.sum().item<double>();
      ms.scored += double(per.numel());
    } else if (batch.w.defined()) {
      auto w = batch.w.to(device_).reshape({-1});
      loss = weighted(per_token_loss(logits, batch.y.to(device_)), w, global.w.sum().clamp_min(1e-6).item<double>(), ms);
    } else {
      loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                  batch.y.to(device_).reshape({-1}));
      if (dist_) loss = loss * (double(batch.x.size(0)) / double(global.x.size(0)));  // this rank's share of the mean
    }
    backward(loss / double(t_.grad_accum), last_micro);
    return loss.item<double>();
  }

  // ---- the log, evaluations, checkpoints ----
  void log_line(const nlohmann::json& j) {
    if (!lead_) return;
    log_ << j.dump() << "\n";
    log_.flush();
  }

  void log_progress(int64_t step, int64_t done, double lr) {
    double now = now_seconds();
    double tps = loss_n_ * tokens_per_step() / std::max(1e-9, now - t_log_);
    res_.tokens_per_s = tps;
    nlohmann::json line = {{"step", done},          {"loss", loss_acc_ / loss_n_}, {"lr", lr},
                           {"grad_norm", last_gnorm_}, {"tokens_per_s", tps},      {"tokens", done * tokens_per_step()},
                           {"elapsed_s", now - t_start_}};
    nlohmann::json mix = nlohmann::json::object();  // per-layer mixer values (gates)
    for (size_t i = 0; i < model_->blocks.size(); ++i)
      if (auto* m = model_->blocks[i]->mixer())
        for (auto& [name, vals] : m->diagnostics(run_memory_.layers[i])) mix["layers." + std::to_string(i) + "." + name] = vals;
    if (!mix.empty()) line["mixers"] = mix;
    if (reducer_) {  // the gradients' all-reduce time the backward pass did not hide, per step
      line["allreduce_wait_s"] = (reducer_->seconds_waiting() - wait_logged_) / loss_n_;
      wait_logged_ = reducer_->seconds_waiting();
    }
    if (cfg_.data.passkey.fraction > 0) line["passkey_max_length"] = sampler_->max_prompt_length(step);
    if (answer_n_ > 0) line["answer_loss"] = answer_acc_ / answer_n_;
    if (sel_n_ > 0) {  // kept and unkept tokens' losses apart: the unkept ones are expected to rise
      line["kept_loss"] = kept_acc_ / sel_n_;
      line["unkept_loss"] = unkept_acc_ / sel_n_;
      line["kept_fraction"] = frac_acc_ / sel_n_;
      if (ref_.model) line["reference_s"] = ref_s_;
      kept_acc_ = unkept_acc_ = frac_acc_ = ref_s_ = 0, sel_n_ = 0;
    }
    answer_acc_ = 0, answer_n_ = 0;
    log_line(line);
    char buf[96];
    std::snprintf(buf, sizeof buf, "loss %.4f lr %.2e %.0f tok/s", loss_acc_ / loss_n_, lr, tps);
    if (!quiet_) bar_->update(done, buf);
    loss_acc_ = 0, loss_n_ = 0, t_log_ = now;
  }

  void evaluate_and_log(int64_t done) {
    const bool last = done == t_.steps;
    auto full = last ? sequential_batches(data_.val, t_.batch_size, cfg_.data.seq_len, 0) : Batches();
    const auto& vb = last ? full : val_batches_;
    double vl = evaluate(model_, vb);
    res_.val_loss = vl;
    res_.val_bpb = vl / std::log(2.0) / bytes_per_token_;
    nlohmann::json vline = {{"step", done}, {"val_loss", vl}, {"val_bpb", res_.val_bpb}, {"val_tokens", count_targets(vb)}};
    const auto& pkc = cfg_.data.passkey;
    if (pkc.fraction > 0 && pkc.eval_samples > 0) evaluate_passkey(done, vline);
    if (!probe_.empty()) score_probe(done, vline);
    log_line(vline);
    if (!quiet_)
      std::fprintf(stderr, "%sstep %lld: validation loss %.4f, %.4f bits per byte\n", isatty(2) ? "\n" : "",
                   (long long)done, vl, res_.val_bpb);
  }

  // Retrieval, not loss alone: passkey accuracy at the configured lengths, and at the longest
  // the memory's norm and the write strength on the key vs filler.
  void evaluate_passkey(int64_t done, nlohmann::json& vline) {
    const auto& pkc = cfg_.data.passkey;
    PasskeyEvalOptions po;
    po.lengths = pkc.eval_lengths;
    po.depths = {0, 50, 100};
    po.samples = pkc.eval_samples;
    po.seed = 12345;
    po.key_min = pkc.key_min, po.key_max = pkc.key_max;
    auto cells = eval_passkey(model_, *tok_, po);
    model_->train();
    nlohmann::json acc = nlohmann::json::object();
    std::string msg;
    for (auto& c : cells) {
      acc[std::to_string(c.length) + "@" + std::to_string(int(c.depth))] = c.accuracy;
      msg += " " + std::to_string(c.length) + "@" + std::to_string(int(c.depth)) + "%=" +
             std::to_string(int(std::lround(100 * c.accuracy))) + "%";
    }
    vline["passkey"] = acc;
    if (!quiet_) std::fprintf(stderr, "step %lld: passkey%s\n", (long long)done, msg.c_str());
    const int64_t probe_len = *std::max_element(po.lengths.begin(), po.lengths.end());
    const int64_t probe_key = po.key_min + int64_t(54321 % uint64_t(po.key_max - po.key_min + 1));
    auto pr = passkey_probe(model_, *tok_, probe_len, 0.5, probe_key);
    vline["probe"] = pr.to_json();
    if (!quiet_ && !pr.beta_key.empty())
      std::fprintf(stderr, "step %lld: write strength on the key %.3f vs filler %.3f (mean over layers)\n", (long long)done,
                   std::accumulate(pr.beta_key.begin(), pr.beta_key.end(), 0.0) / double(pr.beta_key.size()),
                   std::accumulate(pr.beta_filler.begin(), pr.beta_filler.end(), 0.0) / double(pr.beta_filler.size()));
  }

  // Token categories (RHO-1's H->H, L->H, H->L, L->L) between the evaluations so far.
  void score_probe(int64_t done, nlohmann::json& vline) {
    std::vector<torch::Tensor> parts;
    for (auto& [x, y] : probe_) parts.push_back(token_losses(model_, x, y).reshape({-1}));
    model_->train();
    probe_steps_.push_back(double(done));
    probe_losses_.push_back(torch::cat(parts).cpu().to(torch::kFloat16).to(torch::kFloat32));  // as stored
    std::vector<std::pair<std::string, torch::Tensor>> rows;
    for (size_t i = 0; i < probe_steps_.size(); ++i)
      rows.push_back({"step_" + std::to_string(int64_t(probe_steps_[i])), probe_losses_[i].to(torch::kFloat16)});
    save_safetensors(probe_path_, rows, {{"format", "longctx-probe-losses"}});
    vline["probe_loss"] = probe_losses_.back().mean().item<double>();
    if (probe_steps_.size() >= 2) {
      auto c = token_categories(probe_steps_, probe_losses_);
      vline["categories"] = {{"H->H", c.hh}, {"L->H", c.lh}, {"H->L", c.hl}, {"L->L", c.ll}};
    }
  }

  // checkpoint-N/ written whole in a temporary folder and renamed into place; the newest
  // keep_checkpoints are kept.
  void checkpoint(int64_t step) {
    std::string final_dir = opt_.out + "/checkpoint-" + std::to_string(step);
    std::string tmp = opt_.out + "/.checkpoint-" + std::to_string(step) + ".tmp";
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    write_model_files(tmp, cfg_, model_, *tok_, data_.split_json(), step);
    optimizer_->save(tmp + "/optimizer.safetensors");
    save_state(run_memory_path(tmp), run_memory_, cfg_.model);
    if (have_carry_)
      for (size_t m = 0; m < carried_.size(); ++m) save_state(carry_path(tmp, int64_t(m)), carried_[m], cfg_.model);
    write_file_atomic(tmp + "/trainer_state.json",
                      nlohmann::json({{"step", step}, {"seed", t_.seed}, {"config_hash", cfg_.model.hash()}}).dump(2));
    fsync_dir(tmp);
    fs::remove_all(final_dir);
    rename_dir_atomic(tmp, final_dir);
    write_model_files(opt_.out, cfg_, model_, *tok_, data_.split_json(), step);
    std::vector<int64_t> steps;
    for (auto& e : fs::directory_iterator(opt_.out)) {
      auto n = e.path().filename().string();
      if (n.rfind("checkpoint-", 0) == 0) steps.push_back(std::atoll(n.c_str() + 11));
    }
    std::sort(steps.rbegin(), steps.rend());
    for (size_t i = t_.keep_checkpoints; i < steps.size(); ++i)
      fs::remove_all(opt_.out + "/checkpoint-" + std::to_string(steps[i]));
    plot_log(opt_.out);
  }

  const RunConfig& cfg_;
  const TrainConfig& t_;
  const TrainOptions& opt_;
  int64_t resume_step_ = -1, start_ = 0;
  std::string log_path_, probe_path_;
  std::ofstream log_;
  std::unique_ptr<Tokenizer> tok_;
  RunData data_;
  std::unique_ptr<TrainBatches> sampler_;
  bool windowed_ = false;
  torch::Device device_{torch::kCPU};
  Batches val_batches_, probe_;
  double bytes_per_token_ = 1;
  Pretrained ref_;
  std::unique_ptr<ReferenceLossCache> ref_cache_;
  CausalLM model_{nullptr};
  std::unique_ptr<AdamW> optimizer_;
  std::vector<torch::Tensor> params_;
  ModelState run_memory_;
  std::vector<ModelState> carried_;  // per micro-batch: the state the previous step's rows ended in
  std::unique_ptr<Dist> dist_;         // several ranks: the process group
  std::unique_ptr<GradReducer> reducer_;
  bool lead_ = true, quiet_ = false;   // rank 0 writes the log and checkpoints and evaluates
  double wait_logged_ = 0;
  bool have_carry_ = false;
  std::vector<double> probe_steps_;
  std::vector<torch::Tensor> probe_losses_;
  // Accumulated between log lines.
  std::unique_ptr<Progress> bar_;
  double t_start_ = 0, t_log_ = 0, loss_acc_ = 0, answer_acc_ = 0, last_gnorm_ = 0;
  int64_t loss_n_ = 0, answer_n_ = 0, sel_n_ = 0;
  double kept_acc_ = 0, unkept_acc_ = 0, frac_acc_ = 0, ref_s_ = 0;
  TrainResult res_;
};

}  // namespace

TrainResult train(const RunConfig& cfg, const TrainOptions& opt) { return Run(cfg, opt).go(); }

}  // namespace longctx
