// Running RULER on a target: a longctx model (greedy decoding, streamed in chunks), or anything
// else that completes a prompt. Predictions go to RULER-style JSONL, one file per length and
// task, appended and flushed per sample so a killed run continues where it stopped; then a
// summary CSV/JSON (per task, per length average, effective length) and a task x length heatmap.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "eval/ruler.h"
#include "model/lm.h"

namespace longctx::ruler {

// What RULER measures: a prompt in, greedy text out.
class Completer {
 public:
  virtual ~Completer() = default;
  // The tokenizer that counts the prompt's tokens (the haystack is fitted with it).
  virtual const Tokenizer& tokenizer() const = 0;
  virtual std::string complete(const std::string& prompt, int64_t max_tokens) = 0;
  virtual std::string name() const = 0;
};

// A longctx model: the prompt fed in chunks (bounded memory for bounded mixers), then greedy
// decoding of max_tokens tokens.
class ModelCompleter : public Completer {
 public:
  ModelCompleter(CausalLM model, std::shared_ptr<Tokenizer> tok, std::string name, int64_t chunk = 4096);
  const Tokenizer& tokenizer() const override { return *tok_; }
  std::string complete(const std::string& prompt, int64_t max_tokens) override;
  std::string name() const override { return name_; }

 private:
  CausalLM model_;
  std::shared_ptr<Tokenizer> tok_;
  std::string name_;
  int64_t chunk_;
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
