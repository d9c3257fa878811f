// longctx: one subcommand per job. Errors inside the library are thrown with a message naming
// the file, field or limit; they are printed here once, with exit code 1.
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "eval/passkey.h"
#include "eval/ppl.h"
#include "eval/report.h"
#include "eval/litm.h"
#include "eval/ruler.h"
#include "eval/ruler_http.h"
#include "eval/ruler_run.h"
#include "infer/session.h"
#include "io/fs.h"
#include "model/pretrained.h"
#include "search/longrope.h"
#include "text/corpus.h"
#include "train/config.h"
#include "train/data.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/system.h"

using namespace longctx;
namespace fs = std::filesystem;

namespace {

std::vector<int64_t> parse_lengths(const std::string& s, const char* what) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "all") {
      v.push_back(0);
      continue;
    }
    char* end = nullptr;
    long long x = std::strtoll(item.c_str(), &end, 10);
    if (end && (*end == 'K' || *end == 'k')) x *= 1024, ++end;
    else if (end && (*end == 'M' || *end == 'm')) x *= 1024 * 1024, ++end;
    LCX_CHECK(!item.empty() && end && *end == '\0' && x > 0, what, ": '", item,
              "' is not a positive length (numbers, 4K, 1M or all)");
    v.push_back(x);
  }
  LCX_CHECK(!v.empty(), what, ": no lengths given");
  return v;
}

// Documents for evaluation: a corpus name, or "val" = the model's held-out documents (split.json).
std::string eval_text(const std::string& data, const std::string& model_dir) {
  if (data == "val") {
    std::string sp = model_dir + "/split.json";
    LCX_CHECK(fs::exists(sp), "--data val: ", sp, " not found (the model was not trained by longctx train)");
    auto split = nlohmann::json::parse(read_file(sp));
    auto cfg = nlohmann::json::parse(read_file(model_dir + "/config.json"));
    std::string sep = cfg.contains("data") ? cfg["data"].value("separator", "\n\n") : "\n\n";
    std::set<std::string> val;
    for (auto& n : split["val"]) val.insert(n.get<std::string>());
    std::string corpus = cfg["data"]["train"][0];
    std::string text;
    for (auto& d : load_corpus(corpus))
      if (val.count(d.name)) text += d.text + sep;
    return text;
  }
  std::string text;
  for (auto& d : load_corpus(data)) text += d.text;
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"longctx: train, stream, evaluate and serve language models whose context has no fixed end"};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "intra-op threads (default: every core)");

  // train
  auto* tr = app.add_subcommand("train", "train a model from a config (progress bar, JSONL log, loss plot)");
  std::string cfg_path, out;
  bool resume = false;
  int64_t steps = 0, stop_after = 0, stop_at = 0;
  std::vector<std::string> sets;
  tr->add_option("--config", cfg_path, "config file (configs/*.json); with --resume, defaults to the run's own");
  tr->add_option("--out", out, "run folder (checkpoints, log.jsonl, loss.svg)")->required();
  tr->add_flag("--resume", resume, "continue from the latest checkpoint in --out");
  tr->add_option("--steps", steps, "override train.steps");
  tr->add_option("--stop-after", stop_after, "stop after this many steps (a checkpoint is written)");
  tr->add_option("--stop-at", stop_at, "stop once this step is reached, keeping the schedule of train.steps (a checkpoint is written)");
  tr->add_option("--set", sets, "override a config field: path.to.field=value (repeatable)");

  // eval
  auto* ev = app.add_subcommand("eval", "evaluate a model");
  ev->require_subcommand(1);
  auto* ppl = ev->add_subcommand("ppl", "bits per byte over a long document, streamed, at several contexts");
  std::string model_dir, data = "moby-dick", contexts = "256,1024,4096", json_out;
  int64_t chunk = 512;
  std::vector<std::string> msets;
  ppl->add_option("--model", model_dir, "model folder")->required();
  ppl->add_option("--data", data, "corpus (moby-dick, bible, sotu, brown, file:PATH) or val (the model's held-out documents)");
  ppl->add_option("--context", contexts, "comma-separated window lengths in tokens; 'all' = the whole document");
  ppl->add_option("--chunk", chunk, "tokens per forward call (memory)");
  ppl->add_option("--set", msets, "override a model config field, e.g. model.mixer={\"type\":\"sliding_window\",\"window\":256}");
  ppl->add_option("--json", json_out, "also write the results as JSON to this file");
  int64_t max_bytes = 0;
  ppl->add_option("--max-bytes", max_bytes, "use only the first N bytes of the document (0 = all)");

  auto* pkc = ev->add_subcommand("passkey", "passkey retrieval by length and depth (JSONL per sample, summary.json, heatmap)");
  std::string pk_lengths = "4096,32768", pk_depths = "0,25,50,75,100", pk_out, pk_device = "cpu";
  PasskeyEvalOptions pko;
  pkc->add_option("--model", model_dir, "model folder")->required();
  pkc->add_option("--lengths", pk_lengths, "prompt lengths in the model's tokens (4096, 4K, 1M, ...)");
  pkc->add_option("--depths", pk_depths, "depths of the key in percent (0 = start, 100 = just before the question)");
  pkc->add_option("--samples", pko.samples, "prompts (random keys) per length and depth");
  pkc->add_option("--seed", pko.seed, "seed of the keys");
  pkc->add_option("--out", pk_out, "folder for summary.json, samples.jsonl, heatmap.svg")->required();
  pkc->add_option("--chunk", pko.chunk, "tokens per forward call (memory; results do not depend on it)");
  pkc->add_option("--key-min", pko.key_min, "smallest key");
  pkc->add_option("--key-max", pko.key_max, "largest key");
  pkc->add_option("--max-new-tokens", pko.max_new_tokens, "generation limit (0 = digits of --key-max + 4)");
  pkc->add_option("--set", msets, "override a model config field");
  pkc->add_option("--device", pk_device, "cpu or cuda");

  // generate
  auto* gen = app.add_subcommand("generate", "generate text from a prompt, streamed to stdout");
  std::string prompt;
  int64_t max_tokens = 200;
  SamplingOptions so;
  gen->add_option("--model", model_dir, "model folder")->required();
  gen->add_option("--prompt", prompt, "prompt text")->required();
  gen->add_option("--max-tokens", max_tokens, "tokens to generate");
  gen->add_option("--temperature", so.temperature, "0 = greedy");
  gen->add_option("--top-k", so.top_k, "0 = off");
  gen->add_option("--top-p", so.top_p, "nucleus mass, 1 = off");
  gen->add_option("--seed", so.seed, "sampling seed");
  gen->add_option("--set", msets, "override a model config field");

  // info
  auto* info = app.add_subcommand("info", "parameters, config, and state bytes after N tokens");
  std::string info_tokens = "1024,4096,16384";
  info->add_option("--model", model_dir, "model folder")->required();
  info->add_option("--tokens", info_tokens, "measure state bytes after streaming this many tokens");
  info->add_option("--set", msets, "override a model config field");

  // compare
  auto* cmp = app.add_subcommand("compare", "plot and tabulate runs (a log.jsonl metric against tokens) or eval ppl results (bits per byte against context)");
  std::string cmp_runs, cmp_ppl, cmp_ruler, cmp_litm, cmp_labels, cmp_metric = "val_bpb", cmp_out, cmp_title;
  cmp->add_option("--runs", cmp_runs, "comma-separated run folders");
  cmp->add_option("--ppl", cmp_ppl, "comma-separated `eval ppl --json` files, one per series (a series may join several files with +)");
  cmp->add_option("--ruler", cmp_ruler, "comma-separated `longctx ruler --out` folders: per-length averages and effective lengths (table), model x length heatmap (--out)");
  cmp->add_option("--litm", cmp_litm, "comma-separated `longctx litm --out` folders: accuracy against the gold position, one series per folder and size");
  int64_t cmp_size = 0;
  cmp->add_option("--size", cmp_size, "with --litm: only this size (pairs or documents)");
  cmp->add_option("--metric", cmp_metric, "log.jsonl key for --runs (val_bpb, val_loss, loss, answer_loss, ...)");
  cmp->add_option("--labels", cmp_labels, "comma-separated series names (default: folder or model names)");
  cmp->add_option("--title", cmp_title, "plot title");
  cmp->add_option("--out", cmp_out, "SVG file to write (the table goes to stdout)");

  // export
  auto* ex = app.add_subcommand("export", "write a model folder (config, weights, tokenizer, split) with F32/F16/BF16 weights");
  std::string ex_out, ex_dtype = "F16";
  ex->add_option("--model", model_dir, "model or run folder")->required();
  ex->add_option("--out", ex_out, "destination folder")->required();
  ex->add_option("--dtype", ex_dtype, "F32, F16 or BF16");

  // tokenizer train
  auto* tk = app.add_subcommand("tokenizer", "tokenizers");
  tk->require_subcommand(1);
  auto* tkt = tk->add_subcommand("train", "train a SentencePiece tokenizer on a corpus's training split");
  std::string tk_data = "sotu", tk_out, tk_type = "unigram";
  int tk_vocab = 4096;
  int64_t tk_val = 12;
  uint64_t tk_seed = 1234;
  tkt->add_option("--data", tk_data, "corpus");
  tkt->add_option("--vocab-size", tk_vocab, "vocabulary size");
  tkt->add_option("--model-type", tk_type, "unigram or bpe");
  tkt->add_option("--val-docs", tk_val, "documents held out (same rule as data.val_docs)");
  tkt->add_option("--split-seed", tk_seed, "split seed (same rule as data.split_seed)");
  tkt->add_option("--out", tk_out, "folder to write tokenizer.model into")->required();

  // search longrope
  auto* se = app.add_subcommand("search", "searches over a model's settings");
  se->require_subcommand(1);
  auto* slr = se->add_subcommand("longrope", "LongRoPE's evolutionary search for RoPE rescale factors (resumable)");
  LongRopeSearchOptions lro;
  slr->add_option("--model", lro.model, "model folder")->required();
  slr->add_option("--out", lro.out, "output folder: the model with the factors in its config, and the search state")->required();
  slr->add_option("--target-length", lro.target_length, "tokens the long factors are searched for");
  slr->add_flag("--short", lro.short_factors, "search the short factors at the original length (the model must carry long factors)");
  slr->add_option("--original-length", lro.original_length, "the trained context (default: the model's rope_scaling original_max_position_embeddings, else data.seq_len)");
  slr->add_option("--iterations", lro.iterations, "iterations (paper: 40)");
  slr->add_option("--population", lro.population, "population (paper: 64)");
  slr->add_option("--parents", lro.parents, "parents kept per iteration (paper: 32)");
  slr->add_option("--mutations", lro.mutations, "mutations per iteration (paper: 16)");
  slr->add_option("--crossovers", lro.crossovers, "crossovers per iteration (paper: 16)");
  slr->add_option("--samples", lro.samples, "windows of the target length per fitness evaluation (paper: 5)");
  slr->add_option("--cap", lro.cap, "largest factor (default 1.25 x scale; --short: the scale)");
  slr->add_option("--data", lro.data, "corpus of the fitness samples (never the evaluation split or book)");
  slr->add_option("--seed", lro.seed, "seed");

  // ruler prepare
  auto* ru = app.add_subcommand("ruler", "RULER's 13 tasks (MECHANISMS.md section 5): run a model on them (resumable), or `ruler prepare` the data only");
  ru->require_subcommand(0, 1);
  auto* rup = ru->add_subcommand("prepare", "write the task data as RULER's JSONL ({out}/{length}/{task}.jsonl), nothing run");
  rup->fallthrough();  // the options below belong to `ruler` and may follow `prepare`
  std::string ru_model, ru_tok = "byte", ru_tasks = "all", ru_lengths = "4096,8192", ru_out, ru_squad, ru_hotpot;
  std::vector<std::string> ru_sets;
  int64_t ru_samples = 100, ru_chunk = 4096;
  uint64_t ru_seed = 0;
  ru->add_option("--model", ru_model, "the model to run (prepare: count tokens with its tokenizer)");
  std::string ru_endpoint, ru_api_model;
  ru->add_option("--endpoint", ru_endpoint, "an OpenAI-compatible server to run instead of --model (http://host:port)");
  ru->add_option("--api-model", ru_api_model, "the model name the endpoint serves");
  ru->add_option("--tokenizer", ru_tok, "without --model: 'byte' or a folder holding tokenizer.model (counts the prompt's tokens)");
  ru->add_option("--tasks", ru_tasks, "comma-separated task names, or all");
  ru->add_option("--lengths", ru_lengths, "comma-separated token budgets (prompt + tokens to generate)");
  ru->add_option("--samples", ru_samples, "samples per task and length");
  ru->add_option("--seed", ru_seed, "seed");
  ru->add_option("--squad", ru_squad, "SQuAD v2 JSON (dev-v2.0.json) for qa_1");
  ru->add_option("--hotpotqa", ru_hotpot, "HotpotQA JSON (distractor dev set) for qa_2");
  ru->add_option("--chunk", ru_chunk, "prompt tokens per forward call (memory)");
  ru->add_option("--set", ru_sets, "override a model config field (as eval ppl)");
  ru->add_option("--out", ru_out, "output folder")->required();

  // litm
  auto* lm = app.add_subcommand("litm", "lost in the middle (MECHANISMS.md section 6): accuracy by the answer's position, key-value retrieval or multi-document QA (resumable)");
  std::string lm_model, lm_endpoint, lm_api_model, lm_tok = "byte", lm_setup = "kv", lm_sizes, lm_out;
  std::vector<std::string> lm_sets;
  int64_t lm_samples = 20, lm_positions = 5, lm_max_tokens = 100, lm_chunk = 4096;
  uint64_t lm_seed = 0;
  lm->add_option("--model", lm_model, "the model to run");
  lm->add_option("--endpoint", lm_endpoint, "an OpenAI-compatible server to run instead of --model (http://host:port)");
  lm->add_option("--api-model", lm_api_model, "the model name the endpoint serves");
  lm->add_option("--tokenizer", lm_tok, "with --endpoint: 'byte' or a folder holding tokenizer.model (prompt lengths)");
  lm->add_option("--setup", lm_setup, "kv (uuid key-value retrieval) or qa (multi-document QA from the SOTU addresses)");
  lm->add_option("--sizes", lm_sizes, "comma-separated pairs (kv; default 75,140,300) or documents (qa; default 10,20,30)");
  lm->add_option("--positions", lm_positions, "kv: evenly spaced gold positions per size");
  lm->add_option("--samples", lm_samples, "samples per size and gold position");
  lm->add_option("--max-tokens", lm_max_tokens, "tokens generated per answer");
  lm->add_option("--seed", lm_seed, "seed");
  lm->add_option("--chunk", lm_chunk, "prompt tokens per forward call (memory)");
  lm->add_option("--set", lm_sets, "override a model config field (as eval ppl)");
  lm->add_option("--out", lm_out, "output folder")->required();

  CLI11_PARSE(app, argc, argv);

  try {
    int n = set_threads(threads);
    tune_allocator();
    auto warn = blas_warning();
    if (!warn.empty()) std::fprintf(stderr, "%s\n", warn.c_str());

    if (*slr) {
      LCX_CHECK(lro.short_factors || lro.target_length > 0, "search longrope: --target-length is required (or --short)");
      auto r = search_longrope(lro);
      std::printf("best: %.4f bits/byte at %lld tokens (n_hat %lld, from %s), %lld evaluations\nfactors:",
                  r.best.fitness, (long long)(lro.short_factors ? 0 : lro.target_length), (long long)r.best.n_hat,
                  r.best.origin.c_str(), (long long)r.evaluations);
      for (double v : r.best.lambda) std::printf(" %.2f", v);
      std::printf("\nwrote %s/config.json (rope_scaling longrope), search_state.json, search_result.json\n", lro.out.c_str());
      return 0;
    }
    if (*tr) {
      if (cfg_path.empty()) {
        LCX_CHECK(resume, "train: --config is required (or --resume with an existing run)");
        cfg_path = out + "/config.json";
      }
      if (steps > 0) sets.push_back("train.steps=" + std::to_string(steps));
      auto cfg = RunConfig::from_file(cfg_path, sets);
      std::fprintf(stderr, "longctx train: %s -> %s (%d threads)\n", cfg_path.c_str(), out.c_str(), n);
      TrainOptions o;
      o.out = out;
      o.resume = resume;
      o.stop_after = stop_after;
      o.stop_at = stop_at;
      auto r = train(cfg, o);
      std::printf("steps %lld  tokens %lld  final train loss %.4f  ", (long long)r.steps_done, (long long)r.tokens,
                  r.final_loss);
      if (r.val_bpb > 0) std::printf("validation loss %.4f  validation bits/byte %.4f  ", r.val_loss, r.val_bpb);
      else std::printf("(no validation in this invocation)  ");
      std::printf("%.0f tokens/s\n", r.tokens_per_s);
      return 0;
    }
    if (*pkc) {
      auto p = load_pretrained(model_dir, msets);
      if (pk_device == "cuda") {
        LCX_CHECK(torch::cuda::is_available(), "--device cuda: this libtorch sees no CUDA device");
        p.model->to(torch::kCUDA);
      } else {
        LCX_CHECK(pk_device == "cpu", "--device: '", pk_device, "' is not cpu or cuda");
      }
      pko.lengths = parse_lengths(pk_lengths, "--lengths");
      pko.depths.clear();
      {
        std::stringstream ss(pk_depths);
        std::string item;
        while (std::getline(ss, item, ',')) {
          char* end = nullptr;
          double d = std::strtod(item.c_str(), &end);
          LCX_CHECK(!item.empty() && end && *end == '\0' && d >= 0 && d <= 100, "--depths: '", item,
                    "' is not a depth in percent (0..100)");
          pko.depths.push_back(d);
        }
      }
      std::filesystem::create_directories(pk_out);
      std::string samples_path = pk_out + "/samples.jsonl";
      std::ofstream samples(samples_path + ".tmp");
      pko.on_sample = [&](const nlohmann::json& j) { samples << j.dump() << "\n"; };
      pko.log = [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); };
      std::fprintf(stderr, "passkey: model %s (%s, %.2fM parameters, %s state), %lld samples per cell, seed %llu\n",
                   model_dir.c_str(), p.model_config.mixer_type().c_str(), p.model->num_parameters() / 1e6,
                   p.model->state_bounded() ? "bounded" : "growing", (long long)pko.samples,
                   (unsigned long long)pko.seed);
      auto cells = eval_passkey(p.model, *p.tokenizer, pko);
      samples.close();
      std::filesystem::rename(samples_path + ".tmp", samples_path);
      nlohmann::json summary = nlohmann::json::array();
      for (auto& c : cells) summary.push_back(c.to_json());
      write_file_atomic(pk_out + "/summary.json", summary.dump(2) + "\n");
      write_file_atomic(pk_out + "/run.json",
                        nlohmann::json({{"model", model_dir},
                                        {"mechanism", p.model_config.mixer_type()},
                                        {"mixer", p.model_config.mixer},
                                        {"overrides", msets},
                                        {"parameters", p.model->num_parameters()},
                                        {"samples", pko.samples},
                                        {"seed", pko.seed},
                                        {"lengths", pko.lengths},
                                        {"depths", pko.depths},
                                        {"key_min", pko.key_min},
                                        {"key_max", pko.key_max},
                                        {"device", pk_device},
                                        {"threads", n}})
                                .dump(2) + "\n");
      write_file_atomic(pk_out + "/heatmap.svg",
                        passkey_heatmap_svg(cells, "passkey accuracy: " + std::filesystem::path(model_dir).filename().string() +
                                                       " (" + std::to_string(pko.samples) + " samples per cell)"));
      std::printf("%s", passkey_table(cells).c_str());
      std::printf("wrote %s/summary.json, samples.jsonl, heatmap.svg\n", pk_out.c_str());
      return 0;
    }
    if (*ppl) {
      auto p = load_pretrained(model_dir, msets);
      std::string text = eval_text(data, model_dir);
      if (max_bytes > 0 && static_cast<int64_t>(text.size()) > max_bytes) text.resize(max_bytes);
      auto toks = p.tokenizer->encode(text);
      double bpt = double(text.size()) / double(toks.size());
      std::printf("model %s (%s, %.2fM parameters), data %s: %zu bytes, %zu tokens\n", model_dir.c_str(),
                  p.model_config.mixer_type().c_str(), p.model->num_parameters() / 1e6, data.c_str(), text.size(),
                  toks.size());
      std::printf("%10s %12s %14s %12s %12s %12s\n", "context", "bits/byte", "tokens scored", "tokens/s", "state", "peak RSS");
      nlohmann::json results = nlohmann::json::array();
      for (auto c : parse_lengths(contexts, "--context")) {
        PplOptions o;
        o.context = c;
        o.chunk = chunk;
        auto r = eval_bits_per_byte(p.model, toks, bpt, o);
        std::printf("%10lld %12.4f %14lld %12.0f %12s %12s\n", (long long)r.context, r.bits_per_byte,
                    (long long)r.tokens_scored, r.tokens_per_s, human_bytes(r.state_bytes).c_str(),
                    human_bytes(r.peak_rss).c_str());
        std::fflush(stdout);
        results.push_back({{"context", r.context}, {"bits_per_byte", r.bits_per_byte}, {"nats_per_token", r.nats_per_token},
                           {"tokens_scored", r.tokens_scored}, {"windows", r.windows}, {"seconds", r.seconds},
                           {"tokens_per_s", r.tokens_per_s}, {"state_bytes", r.state_bytes}, {"peak_rss_bytes", r.peak_rss}});
      }
      if (!json_out.empty())
        write_file_atomic(json_out, nlohmann::json({{"model", model_dir}, {"data", data}, {"results", results}}).dump(2) + "\n");
      return 0;
    }
    if (*gen) {
      auto p = load_pretrained(model_dir, msets);
      Session s(p.model);
      auto ids = p.tokenizer->encode(prompt);
      LCX_CHECK(!ids.empty(), "generate: the prompt is empty");
      s.feed(ids);
      std::fputs(prompt.c_str(), stdout);
      std::fflush(stdout);
      bool first = false;
      double t0 = now_seconds();
      auto out_ids = s.generate(max_tokens, so, [&](int64_t id) {
        std::fputs(p.tokenizer->piece(id, first).c_str(), stdout);
        std::fflush(stdout);
        return true;
      });
      double dt = now_seconds() - t0;
      std::printf("\n");
      std::fprintf(stderr, "[%zu tokens in %.2fs, %.1f tokens/s; state %s]\n", out_ids.size(), dt, out_ids.size() / dt,
                   human_bytes(s.state().bytes()).c_str());
      return 0;
    }
    if (*cmp) {
      LCX_CHECK(int(!cmp_runs.empty()) + int(!cmp_ppl.empty()) + int(!cmp_ruler.empty()) + int(!cmp_litm.empty()) == 1,
                "compare: give exactly one of --runs, --ppl, --ruler and --litm");
      auto split = [](const std::string& s) {
        std::vector<std::string> v;
        std::stringstream ss(s);
        for (std::string x; std::getline(ss, x, ',');) v.push_back(x);
        return v;
      };
      auto labels = split(cmp_labels);
      if (!cmp_ruler.empty()) {
        auto rows = ruler_rows(split(cmp_ruler), labels);
        std::printf("%s", ruler_markdown(rows).c_str());
        if (!cmp_out.empty()) {
          write_file_atomic(cmp_out, ruler_heatmap(rows, cmp_title.empty() ? "RULER: average over tasks" : cmp_title));
          std::printf("wrote %s\n", cmp_out.c_str());
        }
        return 0;
      }
      PlotOptions po;
      std::vector<Series> series;
      int decimals = 4;
      if (!cmp_litm.empty()) {
        decimals = 1;  // accuracy in percent
        series = litm_curves(split(cmp_litm), labels, cmp_size);
        po.xlabel = "gold position";
        po.ylabel = "accuracy (%)";
      } else if (!cmp_runs.empty()) {
        series = run_curves(split(cmp_runs), labels, cmp_metric);
        po.xlabel = "training tokens";
        po.ylabel = cmp_metric;
      } else {
        series = ppl_curves(split(cmp_ppl), labels);
        po.xlabel = "context (tokens)";
        po.ylabel = "bits per byte";
        po.logx = true;
      }
      po.title = cmp_title.empty() ? po.ylabel + " against " + po.xlabel : cmp_title;
      std::printf("%s", markdown_table(series, po.xlabel, decimals).c_str());
      if (!cmp_out.empty()) {
        write_file_atomic(cmp_out, svg_line_plot(series, po));
        std::printf("wrote %s\n", cmp_out.c_str());
      }
      return 0;
    }
    if (*info) {
      auto p = load_pretrained(model_dir, msets);
      std::printf("model: %s\nparameters: %lld (%.2fM)\nmixer: %s (state %s)\ntokenizer: %s, %lld tokens\nconfig hash: %s\n",
                  model_dir.c_str(), (long long)p.model->num_parameters(), p.model->num_parameters() / 1e6,
                  p.model_config.mixer_type().c_str(),
                  p.model->blocks[0]->mixer() && p.model->blocks[0]->mixer()->state_bounded() ? "bounded" : "grows with context",
                  p.tokenizer->type().c_str(), (long long)p.tokenizer->vocab_size(), p.model_config.hash().c_str());
      std::printf("config: %s\n", p.config["model"].dump().c_str());
      std::printf("%12s %14s\n", "tokens", "state bytes");
      torch::manual_seed(0);
      auto lens = parse_lengths(info_tokens, "--tokens");
      std::sort(lens.begin(), lens.end());
      Session s(p.model);
      int64_t fed = 0;
      for (auto L : lens) {
        LCX_CHECK(L > 0, "--tokens: 'all' is not a length here");
        auto x = torch::randint(0, p.tokenizer->vocab_size(), {L - fed}, torch::kInt64);
        s.feed(std::vector<int64_t>(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel()));
        fed = L;
        std::printf("%12lld %14lld  (%s)\n", (long long)L, (long long)s.state().bytes(), human_bytes(s.state().bytes()).c_str());
      }
      return 0;
    }
    if (*ex) {
      auto p = load_pretrained(model_dir);
      fs::create_directories(ex_out);
      write_file_atomic(ex_out + "/config.json", p.config.dump(2) + "\n");
      save_weights(ex_out + "/model.safetensors", p.model, ex_dtype, {{"exported_from", model_dir}});
      p.tokenizer->save(ex_out);
      for (auto f : {"split.json", "log.jsonl", "loss.svg"})
        if (fs::exists(model_dir + "/" + f)) write_file_atomic(ex_out + "/" + f, read_file(model_dir + "/" + f));
      auto check = load_pretrained(ex_out);  // refuse to leave a folder that does not load
      std::printf("wrote %s (%s weights, %s)\n", ex_out.c_str(), ex_dtype.c_str(),
                  human_bytes(fs::file_size(ex_out + "/model.safetensors")).c_str());
      return 0;
    }
    auto ruler_tasks = [&] {
      std::vector<std::string> tasks;
      if (ru_tasks == "all") {
        for (auto& t : ruler::tasks())
          if (!ruler::needs_qa(t) || (t == "qa_1" ? !ru_squad.empty() : !ru_hotpot.empty())) tasks.push_back(t);
          else std::fprintf(stderr, "ruler: %s skipped: no %s given\n", t.c_str(), t == "qa_1" ? "--squad" : "--hotpotqa");
      } else {
        std::stringstream ss(ru_tasks);
        for (std::string t; std::getline(ss, t, ',');) ruler::tokens_to_generate(t), tasks.push_back(t);  // validates
      }
      return tasks;
    };
    // A model or an endpoint, for `ruler` and `litm`.
    auto make_target = [&](const std::string& cmd, const std::string& model, const std::string& endpoint,
                           const std::string& api_model, const std::string& tokenizer,
                           const std::vector<std::string>& sets, int64_t chunk) {
      LCX_CHECK(model.empty() != endpoint.empty(), cmd, ": give exactly one of --model DIR and --endpoint URL");
      std::unique_ptr<ruler::Completer> target;
      if (!model.empty()) {
        auto p = load_pretrained(model, sets);
        std::shared_ptr<Tokenizer> tok(std::move(p.tokenizer));
        target = std::make_unique<ruler::ModelCompleter>(p.model, tok, fs::path(model).filename().string(), chunk);
      } else {
        LCX_CHECK(!api_model.empty(), cmd, ": --endpoint needs --api-model NAME");
        std::shared_ptr<Tokenizer> tok =
            tokenizer == "byte" ? make_tokenizer("byte", "") : make_tokenizer("sentencepiece", tokenizer);
        target = std::make_unique<ruler::EndpointCompleter>(endpoint, api_model, tok);
      }
      return target;
    };
    if (*lm) {
      litm::RunOptions lo;
      lo.setup = lm_setup;
      LCX_CHECK(lm_setup == "kv" || lm_setup == "qa", "litm: --setup must be kv or qa (got '", lm_setup, "')");
      lo.sizes = parse_lengths(lm_sizes.empty() ? (lm_setup == "kv" ? "75,140,300" : "10,20,30") : lm_sizes, "--sizes");
      for (auto n : lo.sizes) LCX_CHECK(n >= 2, "--sizes: each size must be >= 2 (got ", n, ")");
      lo.positions = lm_positions;
      lo.samples = lm_samples;
      lo.max_tokens = lm_max_tokens;
      lo.seed = lm_seed;
      lo.out = lm_out;
      auto target = make_target("litm", lm_model, lm_endpoint, lm_api_model, lm_tok, lm_sets, lm_chunk);
      int64_t cells = 0;
      for (auto n : lo.sizes)
        cells += int64_t(lm_setup == "kv" ? litm::kv_positions(n, lm_positions).size() : litm::qa_positions(n).size());
      Progress bar("litm", cells * lm_samples);
      int64_t k = 0;
      lo.log = [&](const std::string&) { bar.update(++k); };
      auto sum = litm::run(*target, lo);
      bar.finish();
      for (auto& [n, m] : sum.accuracy) {
        std::printf("%s %lld (%lld prompt tokens):", lm_setup.c_str(), (long long)n, (long long)sum.prompt_tokens[n]);
        for (auto& [g, a] : m) std::printf("  gold %lld: %.1f%%", (long long)g + 1, a);
        std::printf("\n");
      }
      std::printf("wrote %s/summary.csv, summary.json, ucurve.svg\n", lm_out.c_str());
      return 0;
    }
    if (*ru && !*rup) {
      auto target = make_target("ruler", ru_model, ru_endpoint, ru_api_model, ru_tok, ru_sets, ru_chunk);
      ruler::RunOptions ro;
      ro.tasks = ruler_tasks();
      ro.lengths = parse_lengths(ru_lengths, "--lengths");
      for (auto L : ro.lengths) LCX_CHECK(L > 0, "--lengths: 'all' is not a RULER length");
      ro.samples = ru_samples;
      ro.seed = ru_seed;
      ro.out = ru_out;
      Progress bar("ruler", int64_t(ro.tasks.size() * ro.lengths.size()) * ru_samples);
      int64_t n = 0;
      ro.log = [&](const std::string&) { bar.update(++n); };
      auto res = ruler::Resources::load(ru_squad, ru_hotpot);
      auto sum = ruler::run(*target, res, ro);
      bar.finish();
      std::printf("| task |");
      for (auto L : ro.lengths) std::printf(" %lld |", (long long)L);
      std::printf("\n|---|");
      for (size_t i = 0; i < ro.lengths.size(); ++i) std::printf("---|");
      std::printf("\n");
      for (auto& t : ro.tasks) {
        std::printf("| %s |", t.c_str());
        for (auto L : ro.lengths)
          std::isnan(sum.score[t][L]) ? std::printf(" n/a |") : std::printf(" %.1f |", sum.score[t][L]);
        std::printf("\n");
      }
      std::printf("| **average** |");
      for (auto L : ro.lengths) std::printf(" **%.1f** |", sum.average[L]);
      std::printf("\neffective length (> 85.6): %lld\nwrote %s/summary.csv, summary.json, heatmap.svg\n",
                  (long long)sum.effective_length, ru_out.c_str());
      return 0;
    }
    if (*rup) {
      std::unique_ptr<Tokenizer> tok;
      if (!ru_model.empty()) {
        auto cfg = nlohmann::json::parse(read_file(ru_model + "/config.json"));
        tok = make_tokenizer(cfg.contains("tokenizer") ? cfg["tokenizer"].value("type", "byte") : "byte", ru_model);
      } else {
        tok = ru_tok == "byte" ? make_tokenizer("byte", "") : make_tokenizer("sentencepiece", ru_tok);
      }
      auto tasks = ruler_tasks();
      LCX_CHECK(ru_samples >= 1, "ruler prepare: --samples must be >= 1");
      auto res = ruler::Resources::load(ru_squad, ru_hotpot);
      for (int64_t L : parse_lengths(ru_lengths, "--lengths")) {
        LCX_CHECK(L > 0, "--lengths: 'all' is not a RULER length");
        fs::create_directories(ru_out + "/" + std::to_string(L));
        for (auto& t : tasks) {
          std::string path = ru_out + "/" + std::to_string(L) + "/" + t + ".jsonl";
          if (fs::exists(path)) continue;  // written whole (atomically) by an earlier run
          std::string lines;
          int64_t tokens = 0;
          for (int64_t i = 0; i < ru_samples; ++i) {
            auto s = ruler::generate(t, L, *tok, res, ru_seed, i);
            tokens += s.prompt_tokens;
            lines += nlohmann::json({{"index", s.index},
                                     {"input", s.input},
                                     {"outputs", s.outputs},
                                     {"length", s.length},
                                     {"answer_prefix", s.answer_prefix},
                                     {"tokens_to_generate", s.tokens_to_generate},
                                     {"prompt_tokens", s.prompt_tokens}})
                         .dump() + "\n";
          }
          write_file_atomic(path, lines);
          std::printf("%s: %lld samples, %.0f prompt tokens on average\n", path.c_str(), (long long)ru_samples,
                      double(tokens) / double(ru_samples));
        }
      }
      return 0;
    }
    if (*tkt) {
      auto docs = load_corpus(tk_data);
      auto split = split_by_document(docs, tk_val, tk_seed);
      std::vector<std::string> texts;
      for (auto& d : docs)
        if (std::binary_search(split.train.begin(), split.train.end(), d.name)) texts.push_back(d.text);
      fs::create_directories(tk_out);
      SentencePieceTokenizer::train(texts, tk_out + "/tokenizer", tk_vocab, tk_type);
      SentencePieceTokenizer t(tk_out + "/tokenizer.model");
      std::printf("wrote %s/tokenizer.model (%lld pieces, trained on %zu documents)\n", tk_out.c_str(),
                  (long long)t.vocab_size(), texts.size());
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "longctx: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
