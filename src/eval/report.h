// Comparing runs without a Python stack: curves from training logs (log.jsonl) and from
// `eval ppl --json` files, as an SVG plot and a Markdown table.
#pragma once
#include <string>
#include <vector>

#include "util/plot.h"

namespace longctx {

// One series per run folder: `metric` (a key of log.jsonl rows, e.g. val_bpb, val_loss, loss)
// against training tokens (from the run's config: batch x grad_accum x seq_len per step).
// `labels` may be empty (the folder names are used).
std::vector<Series> run_curves(const std::vector<std::string>& runs, const std::vector<std::string>& labels,
                               const std::string& metric);

// One series per `eval ppl --json` file: bits per byte against context in tokens (the whole
// document counts as its number of tokens).
std::vector<Series> ppl_curves(const std::vector<std::string>& files, const std::vector<std::string>& labels);

// Rows = the union of x values, one column per series (blank where a series has no point).
std::string markdown_table(const std::vector<Series>& series, const std::string& xlabel);

}  // namespace longctx
