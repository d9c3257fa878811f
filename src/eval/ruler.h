// Running a RULER target (text/ruler_tasks.h holds the tasks, templates and metrics): any model
// or endpoint behind ruler::Completer, scored per task and length.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "text/ruler_tasks.h"

namespace longctx::ruler {

// ---- running a target ----
// Predictions go to RULER-style JSONL, one file per length and task, appended and flushed per
// sample so a killed run continues where it stopped; then a summary CSV/JSON (per task, the
// per-length average, the effective length) and a task x length heatmap.

// What RULER measures: a prompt in, greedy text out.
class Completer {
 public:
  virtual ~Completer() = default;
  // The tokenizer that counts the prompt's tokens (the haystack is fitted with it).
  virtual const Tokenizer& tokenizer() const = 0;
  virtual std::string complete(const std::string& prompt, int64_t max_tokens) = 0;
  virtual std::string name() const = 0;
};

struct RunOptions {
  std::vector<std::string> tasks;
  std::vector<int64_t> lengths;
  int64_t samples = 100;
  uint64_t seed = 0;
  std::string out;
  std::function<void(const std::string&)> log;  // progress lines (may be empty)
};

struct RunSummary {
  std::map<std::string, std::map<int64_t, double>> score;  // task -> length -> score (0..100)
  std::map<int64_t, double> average;                       // length -> mean over tasks
  int64_t effective_length = 0;                            // against 85.6
};

// Runs (or continues) every task x length, writes {out}/{length}/{task}.jsonl (index, input,
// outputs, length, answer_prefix, prediction, score), {out}/summary.csv, {out}/summary.json and
// {out}/heatmap.svg, and returns the summary.
RunSummary run(Completer& target, const Resources& r, const RunOptions& o);

}  // namespace longctx::ruler
