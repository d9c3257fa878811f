#include "eval/ruler_run.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "infer/session.h"
#include "io/fs.h"
#include "io/json_fields.h"
#include "util/error.h"
#include "util/plot.h"

namespace longctx::ruler {

ModelCompleter::ModelCompleter(CausalLM model, std::shared_ptr<Tokenizer> tok, std::string name, int64_t chunk)
    : model_(std::move(model)), tok_(std::move(tok)), name_(std::move(name)), chunk_(chunk) {}

std::string ModelCompleter::complete(const std::string& prompt, int64_t max_tokens) {
  torch::NoGradGuard ng;
  model_->eval();
  auto ids = tok_->encode(prompt);
  LCX_CHECK(!ids.empty(), "ruler: empty prompt");
  Session s(model_, chunk_);
  s.state().expected_tokens = int64_t(ids.size()) + max_tokens;  // mixers that plan by length
  s.feed(ids);
  SamplingOptions greedy;
  greedy.temperature = 0;
  return tok_->decode(s.generate(max_tokens, greedy));
}

namespace {

std::string fmt(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", x);
  return b;
}

}  // namespace

RunSummary run(Completer& target, const Resources& r, const RunOptions& o) {
  namespace fs = std::filesystem;
  LCX_CHECK(!o.tasks.empty() && !o.lengths.empty(), "ruler: no tasks or no lengths");
  LCX_CHECK(o.samples >= 1, "ruler: --samples must be >= 1");
  fs::create_directories(o.out);
  RunSummary sum;
  for (int64_t L : o.lengths) {
    fs::create_directories(o.out + "/" + std::to_string(L));
    for (auto& task : o.tasks) {
      // A task whose smallest sample is longer than L (cwe needs about 5K byte tokens) is not
      // run there: its cell is empty (NaN) and the length's average is over the other tasks.
      if (int64_t m = min_length(task, target.tokenizer(), r, o.seed); m > L) {
        sum.score[task][L] = std::nan("");
        if (o.log) o.log(task + " @" + std::to_string(L) + ": does not fit (its smallest sample needs " +
                         std::to_string(m) + " tokens)");
        continue;
      }
      const std::string path = o.out + "/" + std::to_string(L) + "/" + task + ".jsonl";
      auto done = resume_jsonl(path, o.samples);
      std::ofstream out(path, std::ios::app);
      double total = 0;
      for (auto& d : done) total += d.at("score").get<double>();
      for (int64_t i = int64_t(done.size()); i < o.samples; ++i) {
        auto s = generate(task, L, target.tokenizer(), r, o.seed, i);
        auto pred = target.complete(s.input + s.answer_prefix, s.tokens_to_generate);
        double sc = score(task, pred, s.outputs);
        total += sc;
        nlohmann::json j = {{"index", s.index},   {"input", s.input},           {"outputs", s.outputs},
                            {"length", s.length}, {"answer_prefix", s.answer_prefix}, {"prediction", pred},
                            {"score", sc}};
        // A byte model may emit invalid UTF-8: replaced (U+FFFD) in the file, scored as generated.
        out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        out.flush();
        if (o.log)
          o.log(task + " @" + std::to_string(L) + " sample " + std::to_string(i + 1) + "/" + std::to_string(o.samples) +
                ": " + fmt(sc));
      }
      sum.score[task][L] = total / double(o.samples);
    }
    double avg = 0;
    int64_t n = 0;
    for (auto& t : o.tasks)
      if (!std::isnan(sum.score[t][L])) avg += sum.score[t][L], ++n;
    sum.average[L] = n ? avg / double(n) : std::nan("");
  }
  sum.effective_length = effective_length(sum.average);

  std::string csv = "task,length,score,samples,metric\n";
  for (auto& t : o.tasks)
    for (int64_t L : o.lengths)
      csv += t + "," + std::to_string(L) + "," + (std::isnan(sum.score[t][L]) ? std::string("n/a") : fmt(sum.score[t][L])) + "," + std::to_string(o.samples) + "," +
             metric(t) + "\n";
  for (int64_t L : o.lengths) csv += "average," + std::to_string(L) + "," + fmt(sum.average[L]) + ",,\n";
  write_file_atomic(o.out + "/summary.csv", csv);
  nlohmann::json j;
  j["target"] = target.name();
  j["samples"] = o.samples;
  j["seed"] = o.seed;
  j["threshold"] = 85.6;
  j["effective_length"] = sum.effective_length;
  auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };  // null: did not fit
  for (auto& [t, m] : sum.score)
    for (auto& [L, s] : m) j["scores"][t][std::to_string(L)] = num(s);
  for (auto& [L, s] : sum.average) j["average"][std::to_string(L)] = num(s);
  write_file_atomic(o.out + "/summary.json", j.dump(2) + "\n");

  std::vector<std::string> rows = o.tasks, cols;
  rows.push_back("average");
  for (int64_t L : o.lengths) cols.push_back(length_label(L));
  std::vector<std::vector<double>> v;
  for (auto& t : o.tasks) {
    v.emplace_back();
    for (int64_t L : o.lengths) v.back().push_back(sum.score[t][L] / 100.0);
  }
  v.emplace_back();
  for (int64_t L : o.lengths) v.back().push_back(sum.average[L] / 100.0);
  PlotOptions po;
  po.title = "RULER: " + target.name() + " (" + std::to_string(o.samples) + " samples per cell)";
  po.xlabel = "length (tokens)";
  write_file_atomic(o.out + "/heatmap.svg", svg_heatmap(rows, cols, v, po));
  return sum;
}

}  // namespace longctx::ruler
