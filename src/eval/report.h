// Comparing runs without a Python stack: curves from training logs (log.jsonl) and from
// `eval ppl --json` files, as an SVG plot and a Markdown table.
#pragma once
#include <cstdint>
#include <map>
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

// Rows = the union of x values, one column per series (blank where a series has no point);
// values with `decimals` digits after the point.
std::string markdown_table(const std::vector<Series>& series, const std::string& xlabel, int decimals = 4);

// RULER over several models: each folder holds a `longctx ruler` summary.json. One row per folder:
// the per-length average (NaN where not run), the effective length; as a Markdown table (one
// column per length, then the effective length) and as a model x length heatmap.
struct RulerRow {
  std::string label;
  std::map<int64_t, double> average;  // length -> score (0..100)
  int64_t effective_length = 0;
};
std::vector<RulerRow> ruler_rows(const std::vector<std::string>& dirs, const std::vector<std::string>& labels);
std::string ruler_markdown(const std::vector<RulerRow>& rows);
std::string ruler_heatmap(const std::vector<RulerRow>& rows, const std::string& title);

// Lost in the middle over several models: each folder holds a `longctx litm` summary.json; one
// series per folder and size (only `size` when not 0): accuracy against the gold position (1-based).
std::vector<Series> litm_curves(const std::vector<std::string>& dirs, const std::vector<std::string>& labels,
                                int64_t size = 0);

}  // namespace longctx
