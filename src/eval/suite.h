// One table across models: every model folder measured the same way, side by side (what
// `longctx eval suite` runs and the demo's results table shows). Per model:
//   - held-out bits per byte (eval/ppl.h) on text the caller gives per model (its own held-out
//     documents), at the context it was trained at (data.seq_len) or one given;
//   - streaming: `stream_tokens` random tokens fed at batch 1 in chunks through a Session, timed
//     (tokens/s), with the state's bytes after them and, beside them, the KV cache full attention
//     of the same width and depth would hold at that length (2 x layers x d_model float32 values
//     per token);
//   - passkey accuracy (eval/passkey.h) per length, over the depths and samples given;
//   - RULER's average over the tasks given (eval/ruler.h) per length, when lengths are given.
// Each model's row is written to {out}/rows/{label}.json as soon as it is measured, with the
// settings it was measured under; a later run with the same settings reuses it (resumable), a
// run with other settings measures again. Passkey and RULER details stay in {out}/{label}/.
#pragma once
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace longctx {

struct SuiteOptions {
  std::vector<int64_t> passkey_lengths = {4096};  // empty: no passkey
  std::vector<double> depths = {0, 50, 100};      // percent
  int64_t passkey_samples = 2;
  std::vector<int64_t> ruler_lengths;  // empty: no RULER
  std::vector<std::string> ruler_tasks = {"niah_single_1"};
  int64_t ruler_samples = 2;
  int64_t stream_tokens = 0;  // 0: the longest passkey length (4096 without one); < 0: no stream
  int64_t chunk = 512;        // tokens per forward call, everywhere
  int64_t ppl_context = -1;   // -1: the model's data.seq_len; 0: the whole text as one stream
  int64_t ppl_bytes = 65536;  // first bytes of the held-out text (0 = all)
  uint64_t seed = 0;
  std::string out;  // required
  // The held-out text of a model folder (empty function: no bits per byte).
  std::function<std::string(const std::string& model_dir)> ppl_text;
  std::function<void(const std::string&)> log;  // progress lines (may be empty)
  // The settings a row depends on (model excluded), as stored with it.
  nlohmann::json settings() const;
};

struct SuiteRow {
  std::string label, model, mechanism;
  int64_t parameters = 0;
  bool bounded = false;               // the state does not grow with the tokens read
  double bits_per_byte = std::nan("");
  int64_t ppl_context = 0, ppl_tokens = 0;
  int64_t stream_tokens = 0;
  double stream_tokens_per_s = 0;
  int64_t state_bytes = 0;            // after stream_tokens
  int64_t kv_bytes = 0;               // full attention of the same width and depth, same length
  int64_t peak_rss_bytes = 0;         // while streaming
  std::map<int64_t, double> passkey;  // length -> accuracy (0..1) over depths and samples; NaN: not run
  std::map<int64_t, double> ruler;    // length -> average over tasks (0..100)
  double seconds = 0;
  nlohmann::json to_json() const;
  static SuiteRow from_json(const nlohmann::json& j);
};

// Measures (or reuses) every model. `labels` may be empty (the folder names); they must be distinct.
std::vector<SuiteRow> run_suite(const std::vector<std::string>& models, const std::vector<std::string>& labels,
                                const SuiteOptions& o);

// One row per model, one column per measurement (passkey and RULER per length).
std::string suite_markdown(const std::vector<SuiteRow>& rows);
// Model x measurement heatmap: passkey accuracy and RULER score (as a fraction) per length.
std::string suite_heatmap(const std::vector<SuiteRow>& rows, const std::string& title);

}  // namespace longctx
