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

}  // namespace

TrainResult train(const RunConfig& cfg, const TrainOptions& opt) {
  const auto& t = cfg.train;
  LCX_CHECK(!opt.out.empty(), "train: --out is required");
  fs::create_directories(opt.out);
  int64_t resume_step = latest_checkpoint(opt.out);
  if (opt.resume) {
    LCX_CHECK(resume_step >= 0, "train --resume: no checkpoint-N folder in ", opt.out, " to resume from");
  } else {
    LCX_CHECK(resume_step < 0, "train: ", opt.out, " already holds checkpoint-", resume_step,
              "; pass --resume to continue it, or choose another --out");
  }

  // Tokenizer: bytes, an existing SentencePiece model, or one trained on the training split.
  std::unique_ptr<Tokenizer> tok;
  if (cfg.tokenizer.type == "byte") {
    tok = std::make_unique<ByteTokenizer>();
  } else if (opt.resume || !cfg.tokenizer.path.empty()) {
    tok = std::make_unique<SentencePieceTokenizer>(opt.resume ? opt.out + "/tokenizer.model" : cfg.tokenizer.path);
  } else {
    auto docs = load_corpus(cfg.data.train[0]);
    auto split = split_by_document(docs, cfg.data.val_docs, cfg.data.split_seed);
    std::vector<std::string> texts;
    for (auto& d : docs)
      if (std::binary_search(split.train.begin(), split.train.end(), d.name)) texts.push_back(d.text);
    SentencePieceTokenizer::train(texts, opt.out + "/tokenizer", static_cast<int>(cfg.tokenizer.vocab_size));
    tok = std::make_unique<SentencePieceTokenizer>(opt.out + "/tokenizer.model");
  }
  LCX_CHECK(tok->vocab_size() <= cfg.model.vocab_size, "model.vocab_size ", cfg.model.vocab_size,
            " is smaller than the tokenizer's ", tok->vocab_size());

  auto data = prepare_data(cfg.data, *tok);
  TrainBatches sampler(cfg.data, data.train, *tok, t.batch_size, t.seed);
  const auto& sel = t.selective;
  LCX_CHECK(!sel.enabled() || cfg.data.passkey.fraction <= 0,
            "train.selective cannot be combined with data.passkey (weighted passkey losses)");
  LCX_CHECK(!sel.enabled() || cfg.data.ruler.fraction <= 0,
            "train.selective cannot be combined with data.ruler (weighted task answers)");
  if (cfg.data.ruler.fraction > 0 && !opt.quiet) {
    std::string names;
    for (auto& n : sampler.ruler_tasks()) names += (names.empty() ? "" : ", ") + n;
    std::fprintf(stderr, "RULER mixture (%.0f%% of rows, %lld-%lld tokens): %s\n", 100 * cfg.data.ruler.fraction,
                 (long long)cfg.data.ruler.min_length, (long long)cfg.data.ruler.max_length, names.c_str());
    for (auto& why : sampler.ruler_left_out()) std::fprintf(stderr, "  left out: %s\n", why.c_str());
  }
  torch::Device device(torch::kCPU);
  if (t.device == "cuda") {
    LCX_CHECK(torch::cuda::is_available(), "train.device is \"cuda\" but this libtorch sees no CUDA device");
    device = torch::Device(torch::kCUDA);
  }
  // Periodic evaluations: eval_batches batches spread over the whole validation split. The last
  // step evaluates every window of the split.
  auto val_batches = sequential_batches(data.val, t.batch_size, cfg.data.seq_len, t.eval_batches);
  LCX_CHECK(!val_batches.empty(), "validation split has too few tokens for one sequence of ", cfg.data.seq_len);
  auto count = [](const std::vector<std::pair<torch::Tensor, torch::Tensor>>& v) {
    int64_t n = 0;
    for (auto& b : v) n += b.second.numel();
    return n;
  };
  double bytes_per_token = double(data.val.bytes) / double(std::max<size_t>(1, data.val.tokens.size()));

  // The reference model of selective training: frozen, evaluated without gradients.
  Pretrained ref;
  if (sel.enabled() && !sel.reference.empty()) {
    ref = load_pretrained(sel.reference);
    LCX_CHECK(ref.tokenizer->vocab_size() == tok->vocab_size() && ref.model_config.vocab_size == cfg.model.vocab_size,
              "train.selective.reference: ", sel.reference, " has vocabulary ", ref.model_config.vocab_size,
              " (tokenizer ", ref.tokenizer->vocab_size(), "), this run ", cfg.model.vocab_size, " (tokenizer ",
              tok->vocab_size(), ")");
    ref.model->to(device);
    ref.model->eval();
    for (auto& p : ref.model->parameters()) p.set_requires_grad(false);
  }
  std::unique_ptr<ReferenceLossCache> ref_cache;
  if (ref.model && !sel.cache.empty()) {
    std::string key = fnv_hex(read_file(sel.reference + "/model.safetensors")) + ":" +
                      fnv_hex(nlohmann::json(cfg.to_json()["data"]).dump()) + ":seed=" + std::to_string(t.seed);
    ref_cache = std::make_unique<ReferenceLossCache>(sel.cache, key, t.steps, t.grad_accum, t.batch_size, cfg.data.seq_len);
    if (!ref_cache->load()) {
      double t0 = now_seconds();
      Progress pb("reference losses", t.steps);
      for (int64_t s = 0; s < t.steps; ++s) {
        for (int64_t m = 0; m < t.grad_accum; ++m) {
          auto b = sampler.get(s, m);
          ref_cache->set(s, m, token_losses(ref.model, b.x, b.y));
        }
        if (!opt.quiet) pb.update(s + 1);
      }
      ref_cache->save();
      if (!opt.quiet) {
        pb.finish();
        std::fprintf(stderr, "reference losses of %lld steps cached in %s (%.1f s)\n", (long long)t.steps,
                     sel.cache.c_str(), now_seconds() - t0);
      }
    } else if (!opt.quiet) {
      std::fprintf(stderr, "reference losses read from %s\n", sel.cache.c_str());
    }
  }
  // Token categories: a fixed probe of training tokens, scored at every evaluation.
  auto probe = t.category_tokens > 0 ? probe_batches(data.train, t.category_tokens, t.batch_size, cfg.data.seq_len)
                                     : decltype(val_batches)();
  std::vector<double> probe_steps;
  std::vector<torch::Tensor> probe_losses;
  const std::string probe_path = opt.out + "/probe_losses.safetensors";

  torch::manual_seed(t.seed);
  CausalLM model(cfg.model);
  model->to(device);
  model->train();
  if (!t.trainable.empty())
    LCX_CHECK(freeze_except(named_weights(model), t.trainable) > 0, "train.trainable: no parameter of this model matches");
  auto groups = make_param_groups(named_weights(model), t);
  AdamW opt_(groups, t.beta1, t.beta2, t.eps);
  std::vector<torch::Tensor> params;
  for (auto& g : groups) params.insert(params.end(), g.params.begin(), g.params.end());

  int64_t start = 0;
  std::string log_path = opt.out + "/log.jsonl";
  if (opt.resume) {
    std::string ck = opt.out + "/checkpoint-" + std::to_string(resume_step);
    load_weights(ck + "/model.safetensors", model);
    opt_.load(ck + "/optimizer.safetensors");
    auto st = nlohmann::json::parse(read_file(ck + "/trainer_state.json"));
    start = st["step"].get<int64_t>();
    LCX_CHECK(opt_.steps() == start, ck, ": optimizer step ", opt_.steps(), " != trainer step ", start);
    truncate_log(log_path, start);
    if (!probe.empty() && fs::exists(probe_path)) {
      auto f = load_safetensors(probe_path);
      for (auto& [name, tensor] : f.tensors) {
        double st = std::atof(name.c_str() + 5);  // "step_N"
        if (st <= start) probe_steps.push_back(st), probe_losses.push_back(tensor.to(torch::kFloat32));
      }
    }
    if (!opt.quiet) std::fprintf(stderr, "resuming %s from step %lld\n", opt.out.c_str(), (long long)start);
  } else {
    if (!t.init_from.empty()) {
      std::string w = t.init_from + "/model.safetensors";
      LCX_CHECK(std::filesystem::exists(w), "train.init_from: ", w, " does not exist");
      load_weights(w, model, t.init_ignore, t.init_copy);
      if (!opt.quiet) std::fprintf(stderr, "initialised from %s\n", w.c_str());
    }
    write_file_atomic(log_path, "");
  }
  write_model_files(opt.out, cfg, model, *tok, data.split_json(), start);

  if (!opt.quiet)
    std::fprintf(stderr,
                 "model: %s, %.2fM parameters; data: %zu train tokens, %zu validation tokens (%zu documents held out)\n",
                 cfg.model.mixer_type().c_str(), model->num_parameters() / 1e6, data.train.tokens.size(),
                 data.val.tokens.size(), data.split.val.size());

  std::ofstream log(log_path, std::ios::app);
  auto log_line = [&](const nlohmann::json& j) {
    log << j.dump() << "\n";
    log.flush();
  };

  // Windows of tbptt tokens and carried states (rows that continue the previous step's stream).
  const bool windowed = t.tbptt > 0 || t.carry_fraction > 0;
  LCX_CHECK(!windowed || !sel.enabled(), "train.tbptt and train.carry_fraction cannot be combined with train.selective");
  // Per micro-batch: the state the previous step's rows ended in (have_carry once one exists).
  std::vector<ModelState> carried(t.carry_fraction > 0 ? t.grad_accum : 0);
  bool have_carry = false;
  auto carry_path = [&](const std::string& dir, int64_t micro) {
    return dir + "/carry-" + std::to_string(micro) + ".safetensors";
  };
  if (t.carry_fraction > 0 && opt.resume) {
    std::string ck = opt.out + "/checkpoint-" + std::to_string(resume_step);
    have_carry = true;
    for (int64_t m = 0; m < t.grad_accum; ++m) {
      if (!fs::exists(carry_path(ck, m))) {
        have_carry = false;
        break;
      }
      carried[m] = load_state(carry_path(ck, m), *model);
      state_to(carried[m], device);
    }
  }

  // What the mixers keep between training calls (their random draws, FAM's passed memory): saved
  // with every checkpoint, so a resumed run draws and passes what the uninterrupted one did.
  ModelState run_memory = model->new_state();
  const auto run_memory_path = [](const std::string& dir) { return dir + "/run_memory.safetensors"; };
  if (opt.resume) {
    std::string ck = opt.out + "/checkpoint-" + std::to_string(resume_step);
    if (fs::exists(run_memory_path(ck))) {
      run_memory = load_state(run_memory_path(ck), cfg.model);
      state_to(run_memory, device);
    }
  }

  auto checkpoint = [&](int64_t step) {
    std::string final_dir = opt.out + "/checkpoint-" + std::to_string(step);
    std::string tmp = opt.out + "/.checkpoint-" + std::to_string(step) + ".tmp";
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    write_model_files(tmp, cfg, model, *tok, data.split_json(), step);
    opt_.save(tmp + "/optimizer.safetensors");
    save_state(run_memory_path(tmp), run_memory, cfg.model);
    if (have_carry)
      for (size_t m = 0; m < carried.size(); ++m) save_state(carry_path(tmp, int64_t(m)), carried[m], cfg.model);
    write_file_atomic(tmp + "/trainer_state.json",
                      nlohmann::json({{"step", step}, {"seed", t.seed}, {"config_hash", cfg.model.hash()}}).dump(2));
    fsync_dir(tmp);
    fs::remove_all(final_dir);
    rename_dir_atomic(tmp, final_dir);
    write_model_files(opt.out, cfg, model, *tok, data.split_json(), step);
    // Keep the newest keep_checkpoints folders.
    std::vector<int64_t> steps;
    for (auto& e : fs::directory_iterator(opt.out)) {
      auto n = e.path().filename().string();
      if (n.rfind("checkpoint-", 0) == 0) steps.push_back(std::atoll(n.c_str() + 11));
    }
    std::sort(steps.rbegin(), steps.rend());
    for (size_t i = t.keep_checkpoints; i < steps.size(); ++i)
      fs::remove_all(opt.out + "/checkpoint-" + std::to_string(steps[i]));
    plot_log(opt.out);
  };

  TrainResult res;
  int64_t end = t.steps;
  if (opt.stop_after > 0) end = std::min(end, start + opt.stop_after);
  if (opt.stop_at > 0) end = std::min(end, opt.stop_at);
  Progress bar("train", t.steps);
  double t_start = now_seconds(), t_log = t_start, loss_acc = 0, answer_acc = 0;
  int64_t answer_n = 0;
  double kept_acc = 0, unkept_acc = 0, frac_acc = 0, ref_s = 0;
  int64_t sel_n = 0;
  int64_t loss_n = 0, tokens_per_step = t.batch_size * t.grad_accum * cfg.data.seq_len;
  for (int64_t step = start; step < end; ++step) {
    double lr = lr_at(t, step);
    double step_loss = 0;
    // Rows of this step start from the previous step's final states (detached), or fresh.
    std::mt19937_64 carry_rng(mix_seed(t.seed ^ 0x6361727279ull, uint64_t(step)));
    const bool carry = have_carry && std::uniform_real_distribution<double>(0, 1)(carry_rng) < t.carry_fraction;
    for (int64_t micro = 0; micro < t.grad_accum; ++micro) {
      auto batch = sampler.get(step, micro);
      auto st = carry ? std::move(carried[micro]) : model->new_state();
      st.run_memory = &run_memory.layers;
      st.hand_on = t.carry_fraction > 0;  // otherwise each row starts and ends here
      if (windowed) {  // truncated back-propagation through time, or a carried state
        const int64_t T = batch.x.size(1), W = t.tbptt > 0 ? t.tbptt : T;
        auto x = batch.x.to(device), y = batch.y.to(device);
        auto w = batch.w.defined() ? batch.w.to(device) : torch::Tensor();
        const double denom = w.defined() ? std::max(1e-6, w.sum().item<double>()) : double(y.numel());
        double ans_sum = 0, n_ans = 0;
        for (int64_t w0 = 0; w0 < T; w0 += W) {
          const int64_t len = std::min(W, T - w0);
          st.hand_on = t.carry_fraction > 0 || w0 + len < T;
          auto logits = model->forward(x.narrow(1, w0, len), st, /*training=*/true);
          auto per = torch::nn::functional::cross_entropy(
              logits.reshape({-1, logits.size(-1)}), y.narrow(1, w0, len).reshape({-1}),
              torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
          torch::Tensor loss;
          if (w.defined()) {
            auto ww = w.narrow(1, w0, len).reshape({-1});
            loss = (per * ww).sum() / denom;
            auto ans = (ww > 1).to(per.scalar_type());
            ans_sum += (per.detach() * ans).sum().item<double>(), n_ans += ans.sum().item<double>();
          } else {
            loss = per.sum() / denom;
          }
          (loss / double(t.grad_accum)).backward();
          step_loss += loss.item<double>() / t.grad_accum;
          st.detach_();
        }
        if (n_ans > 0) answer_acc += ans_sum / n_ans, ++answer_n;
        if (t.carry_fraction > 0) carried[micro] = std::move(st);
        continue;
      }
      auto logits = model->forward(batch.x.to(device), st, /*training=*/true);
      auto flat = logits.reshape({-1, logits.size(-1)});
      torch::Tensor loss;
      if (sel.enabled()) {  // RHO-1: the loss over the kept tokens only
        auto per = torch::nn::functional::cross_entropy(
            flat, batch.y.to(device).reshape({-1}), torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
        auto valid = batch.valid.to(device).reshape({-1});
        torch::Tensor mask;
        if (sel.select == "random") {
          mask = select_random(valid.cpu(), sel.keep, mix_seed(t.seed ^ 0x72616e64ull, step, micro)).to(device);
        } else {
          double r0 = now_seconds();
          auto rl = ref_cache ? ref_cache->get(step, micro) : token_losses(ref.model, batch.x, batch.y);
          ref_s += now_seconds() - r0;
          mask = select_top(per.detach() - rl.to(device).reshape({-1}), valid, sel.keep);
        }
        auto r = masked_mean(per, mask, valid);
        loss = r.loss;
        kept_acc += r.kept_loss, unkept_acc += r.unkept_loss, frac_acc += double(r.kept) / double(per.numel());
        ++sel_n;
      } else if (batch.w.defined()) {  // weighted: passkey answers weigh more, unpredictable keys nothing
        auto w = batch.w.to(device).reshape({-1});
        auto per = torch::nn::functional::cross_entropy(
            flat, batch.y.to(device).reshape({-1}), torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
        loss = (per * w).sum() / w.sum().clamp_min(1e-6);
        // The answers alone (tokens weighing more than 1): is retrieval being learned?
        auto ans = (w > 1).to(per.scalar_type());
        double n_ans = ans.sum().item<double>();
        if (n_ans > 0) answer_acc += (per.detach() * ans).sum().item<double>() / n_ans, ++answer_n;
      } else {
        loss = torch::nn::functional::cross_entropy(flat, batch.y.to(device).reshape({-1}));
      }
      (loss / double(t.grad_accum)).backward();
      step_loss += loss.item<double>() / t.grad_accum;
    }
    LCX_CHECK(std::isfinite(step_loss), "train: loss is ", step_loss, " at step ", step,
              " (try a lower train.lr or a smaller train.clip)");
    double gnorm = clip_grad_norm(params, t.clip);
    opt_.step(lr);
    opt_.zero_grad();
    have_carry = t.carry_fraction > 0;  // this step's rows left their states in `carried`
    loss_acc += step_loss;
    ++loss_n;
    res.final_loss = step_loss;
    int64_t done = step + 1;
    if (done % t.log_every == 0 || done == end) {
      double now = now_seconds();
      double tps = loss_n * tokens_per_step / std::max(1e-9, now - t_log);
      res.tokens_per_s = tps;
      nlohmann::json line = {{"step", done},         {"loss", loss_acc / loss_n}, {"lr", lr},
                             {"grad_norm", gnorm},   {"tokens_per_s", tps},       {"tokens", done * tokens_per_step},
                             {"elapsed_s", now - t_start}};
      nlohmann::json mix = nlohmann::json::object();  // per-layer mixer values (gates)
      for (size_t i = 0; i < model->blocks.size(); ++i)
        if (auto* m = model->blocks[i]->mixer())
          for (auto& [name, vals] : m->diagnostics(run_memory.layers[i])) mix["layers." + std::to_string(i) + "." + name] = vals;
      if (!mix.empty()) line["mixers"] = mix;
      if (cfg.data.passkey.fraction > 0) line["passkey_max_length"] = sampler.max_prompt_length(step);
      if (answer_n > 0) line["answer_loss"] = answer_acc / answer_n;
      if (sel_n > 0) {  // kept and unkept tokens' losses apart: the unkept ones are expected to rise
        line["kept_loss"] = kept_acc / sel_n;
        line["unkept_loss"] = unkept_acc / sel_n;
        line["kept_fraction"] = frac_acc / sel_n;
        if (ref.model) line["reference_s"] = ref_s;
        kept_acc = unkept_acc = frac_acc = ref_s = 0, sel_n = 0;
      }
      answer_acc = 0, answer_n = 0;
      log_line(line);
      char buf[96];
      std::snprintf(buf, sizeof buf, "loss %.4f lr %.2e %.0f tok/s", loss_acc / loss_n, lr, tps);
      if (!opt.quiet) bar.update(done, buf);
      loss_acc = 0, loss_n = 0, t_log = now;
    }
    bool last = done == t.steps;
    if ((t.eval_every > 0 && done % t.eval_every == 0) || last) {
      auto full = last ? sequential_batches(data.val, t.batch_size, cfg.data.seq_len, 0) : decltype(val_batches)();
      const auto& vb = last ? full : val_batches;
      double vl = evaluate(model, vb);
      res.val_loss = vl;
      res.val_bpb = vl / std::log(2.0) / bytes_per_token;
      nlohmann::json vline = {{"step", done}, {"val_loss", vl}, {"val_bpb", res.val_bpb}, {"val_tokens", count(vb)}};
      const auto& pkc = cfg.data.passkey;
      if (pkc.fraction > 0 && pkc.eval_samples > 0) {  // retrieval, not loss alone
        PasskeyEvalOptions po;
        po.lengths = pkc.eval_lengths;
        po.depths = {0, 50, 100};
        po.samples = pkc.eval_samples;
        po.seed = 12345;
        po.key_min = pkc.key_min, po.key_max = pkc.key_max;
        auto cells = eval_passkey(model, *tok, po);
        model->train();
        nlohmann::json acc = nlohmann::json::object();
        std::string msg;
        for (auto& c : cells) {
          acc[std::to_string(c.length) + "@" + std::to_string(int(c.depth))] = c.accuracy;
          msg += " " + std::to_string(c.length) + "@" + std::to_string(int(c.depth)) + "%=" +
                 std::to_string(int(std::lround(100 * c.accuracy))) + "%";
        }
        vline["passkey"] = acc;
        if (!opt.quiet) std::fprintf(stderr, "step %lld: passkey%s\n", (long long)done, msg.c_str());
        // The memory at the longest length: its norm, and the write strength on the key vs filler.
        const int64_t probe_len = *std::max_element(po.lengths.begin(), po.lengths.end());
        const int64_t probe_key = po.key_min + int64_t(54321 % uint64_t(po.key_max - po.key_min + 1));
        auto pr = passkey_probe(model, *tok, probe_len, 0.5, probe_key);
        vline["probe"] = pr.to_json();
        if (!opt.quiet && !pr.beta_key.empty())
          std::fprintf(stderr, "step %lld: write strength on the key %.3f vs filler %.3f (mean over layers)\n",
                       (long long)done,
                       std::accumulate(pr.beta_key.begin(), pr.beta_key.end(), 0.0) / double(pr.beta_key.size()),
                       std::accumulate(pr.beta_filler.begin(), pr.beta_filler.end(), 0.0) / double(pr.beta_filler.size()));
      }
      if (!probe.empty()) {  // token categories between the evaluations so far
        std::vector<torch::Tensor> parts;
        for (auto& [x, y] : probe) parts.push_back(token_losses(model, x, y).reshape({-1}));
        model->train();
        probe_steps.push_back(double(done));
        probe_losses.push_back(torch::cat(parts).cpu().to(torch::kFloat16).to(torch::kFloat32));  // as stored
        std::vector<std::pair<std::string, torch::Tensor>> rows;
        for (size_t i = 0; i < probe_steps.size(); ++i)
          rows.push_back({"step_" + std::to_string(int64_t(probe_steps[i])), probe_losses[i].to(torch::kFloat16)});
        save_safetensors(probe_path, rows, {{"format", "longctx-probe-losses"}});
        vline["probe_loss"] = probe_losses.back().mean().item<double>();
        if (probe_steps.size() >= 2) {
          auto c = token_categories(probe_steps, probe_losses);
          vline["categories"] = {{"H->H", c.hh}, {"L->H", c.lh}, {"H->L", c.hl}, {"L->L", c.ll}};
        }
      }
      log_line(vline);
      if (!opt.quiet)
        std::fprintf(stderr, "%sstep %lld: validation loss %.4f, %.4f bits per byte\n", isatty(2) ? "\n" : "",
                     (long long)done, vl, res.val_bpb);
    }
    if ((t.checkpoint_every > 0 && done % t.checkpoint_every == 0) || done == end) checkpoint(done);
  }
  res.steps_done = end;
  res.tokens = end * tokens_per_step;
  if (!opt.quiet && end == t.steps) bar.finish();
  return res;
}

}  // namespace longctx
