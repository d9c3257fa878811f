// Lost in the middle, run against a target (any ruler::Completer: a longctx model, an endpoint);
// text/litm_tasks.h holds the setups, prompts and scoring.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "eval/ruler.h"
#include "text/litm_tasks.h"

namespace longctx::litm {

struct RunOptions {
  std::string setup = "kv";     // kv | qa
  std::vector<int64_t> sizes;   // pairs or documents
  int64_t positions = 5;        // kv: gold positions per size (qa uses the paper's)
  int64_t samples = 20;         // per (size, position)
  int64_t max_tokens = 100;     // tokens generated per answer (the paper's 100)
  uint64_t seed = 0;
  std::string out;
  std::function<void(const std::string&)> log;
};

struct RunSummary {
  std::map<int64_t, std::map<int64_t, double>> accuracy;  // size -> gold index -> accuracy (0..100)
  std::map<int64_t, int64_t> prompt_tokens;               // size -> mean prompt tokens
};

// Runs (or continues) every size x position: {out}/{setup}-{size}/gold-{i}.jsonl (index, size,
// gold, input, outputs, prediction, correct), appended and flushed per sample so a killed run
// continues; then {out}/summary.csv, summary.json and ucurve.svg (accuracy against the gold
// position, one line per size). qa reads the passages from data/sotu.
RunSummary run(ruler::Completer& target, const RunOptions& o);

}  // namespace longctx::litm
