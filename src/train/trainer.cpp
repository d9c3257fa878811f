#include "train/trainer.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unistd.h>

#include "io/fs.h"
#include "model/pretrained.h"
#include "train/data.h"
#include "train/optim.h"
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

// Mean next-token loss (nats) over the fixed validation batches.
double evaluate(CausalLM& model, const std::vector<std::pair<torch::Tensor, torch::Tensor>>& batches) {
  torch::NoGradGuard ng;
  model->eval();
  double sum = 0;
  int64_t n = 0;
  for (auto& [x, y] : batches) {
    auto st = model->new_state();
    auto logits = model->forward(x, st);
    auto l = torch::nn::functional::cross_entropy(
        logits.reshape({-1, logits.size(-1)}), y.reshape({-1}),
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
  BatchSampler sampler(data.train, t.batch_size, cfg.data.seq_len, t.seed);
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

  torch::manual_seed(t.seed);
  CausalLM model(cfg.model);
  model->train();
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
    if (!opt.quiet) std::fprintf(stderr, "resuming %s from step %lld\n", opt.out.c_str(), (long long)start);
  } else {
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

  auto checkpoint = [&](int64_t step) {
    std::string final_dir = opt.out + "/checkpoint-" + std::to_string(step);
    std::string tmp = opt.out + "/.checkpoint-" + std::to_string(step) + ".tmp";
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    write_model_files(tmp, cfg, model, *tok, data.split_json(), step);
    opt_.save(tmp + "/optimizer.safetensors");
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
  Progress bar("train", t.steps);
  double t_start = now_seconds(), t_log = t_start, loss_acc = 0;
  int64_t loss_n = 0, tokens_per_step = t.batch_size * t.grad_accum * cfg.data.seq_len;
  for (int64_t step = start; step < end; ++step) {
    double lr = lr_at(t, step);
    double step_loss = 0;
    for (int64_t micro = 0; micro < t.grad_accum; ++micro) {
      auto [x, y] = sampler.get(step, micro);
      auto st = model->new_state();
      auto logits = model->forward(x, st, /*training=*/true);
      auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}));
      (loss / double(t.grad_accum)).backward();
      step_loss += loss.item<double>() / t.grad_accum;
    }
    LCX_CHECK(std::isfinite(step_loss), "train: loss is ", step_loss, " at step ", step,
              " (try a lower train.lr or a smaller train.clip)");
    double gnorm = clip_grad_norm(params, t.clip);
    opt_.step(lr);
    opt_.zero_grad();
    loss_acc += step_loss;
    ++loss_n;
    res.final_loss = step_loss;
    int64_t done = step + 1;
    if (done % t.log_every == 0 || done == end) {
      double now = now_seconds();
      double tps = loss_n * tokens_per_step / std::max(1e-9, now - t_log);
      res.tokens_per_s = tps;
      log_line({{"step", done}, {"loss", loss_acc / loss_n}, {"lr", lr}, {"grad_norm", gnorm},
                {"tokens_per_s", tps}, {"tokens", done * tokens_per_step}, {"elapsed_s", now - t_start}});
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
      log_line({{"step", done}, {"val_loss", vl}, {"val_bpb", res.val_bpb}, {"val_tokens", count(vb)}});
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
