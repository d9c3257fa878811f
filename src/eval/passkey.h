// Passkey retrieval (MECHANISMS.md section 4) at any length, in bounded memory when the model's
// state is bounded. For each (length, depth) cell, `samples` prompts with random keys share the
// prompt up to the info (computed once, at batch 1, and extended from one depth to the next),
// then run as one batch through the info, the rest of the noise and the question, and generate
// greedily. Score: the first integer of the generation equals the key.
#pragma once
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

#include "model/lm.h"
#include "text/tokenizer.h"

namespace longctx {

struct PasskeyEvalOptions {
  std::vector<int64_t> lengths = {4096};
  std::vector<double> depths = {0, 25, 50, 75, 100};  // percent
  int64_t samples = 20;
  uint64_t seed = 0;
  int64_t chunk = 768;           // tokens per forward call (any value gives the same result)
  int64_t max_new_tokens = 0;    // 0: digits of key_max + 4
  int64_t key_min = 10000, key_max = 99999;
  int64_t memory_budget = 0;     // bytes a growing state may take; 0 = 80% of MemAvailable
  std::function<void(const std::string&)> log;            // progress lines (may be empty)
  double progress_every = 3.0;  // seconds between "read N of L tokens" lines within a cell (0: every chunk)
  std::function<void(const nlohmann::json&)> on_sample;   // one record per sample (may be empty)
};

struct PasskeyCell {
  int64_t length = 0;
  double depth = 0;  // percent
  int64_t samples = 0, correct = 0;
  double accuracy = 0, seconds = 0;
  int64_t peak_rss_bytes = 0;  // this cell's peak (VmHWM reset at its start where Linux allows)
  int64_t state_bytes = 0;     // one stream's state after the prompt
  std::string status = "ok";   // "ok", or why the cell was not run
  nlohmann::json to_json() const;
};

std::vector<PasskeyCell> eval_passkey(CausalLM& model, const Tokenizer& tok, const PasskeyEvalOptions& o);

// One passkey prompt read at batch 1 with the mixers' per-token values recorded (what the length
// curriculum logs): per recording layer, the mean write strength (Infini-attention's DeltaNet
// beta, over heads) on the key's digits and on the filler noise; per layer, the Frobenius norm of
// the state's memory "M" after the prompt (empty when the mixer keeps none); with Gated DeltaNet's
// decay, per recording layer and head the mean forgetting rate -log alpha over the prompt (1 / it
// is the memory's timescale in tokens).
struct PasskeyProbe {
  std::vector<double> beta_key, beta_filler;
  std::vector<std::vector<double>> forget;
  std::vector<double> memory_norm;
  nlohmann::json to_json() const;
};
PasskeyProbe passkey_probe(CausalLM& model, const Tokenizer& tok, int64_t length, double depth, int64_t key,
                           int64_t chunk = 1024);

// How a key written at the start of a passkey prompt fades as the filler goes on. Two prompts that
// differ only in their key (key, other_key, of the same token count) are read side by side; at
// every `every` tokens of filler after the info, a copy of the state is asked the question. Each
// point reports, per layer: ||M|| and the key's imprint ||M_key - M_other|| / ||M_key||; the RMS of
// the memory's read and of the local path over the filler since the last point; the difference
// the key makes to the memory's read at the question's last token, ||r_key - r_other|| / ||r_key||.
// And for the model as a whole: the greedy answer, and with the right answer fed, each answer
// token's log-probability margin over the best other token ("margins"; "margin": the smallest
// over the key's digits). Layers without a memory report zeros.
struct PasskeyTraceOptions {
  int64_t length = 65536;  // prompt length; points run to length - the question
  double depth = 0;
  int64_t key = 53703, other_key = 19481;
  int64_t every = 2048;
  int64_t chunk = 1024;
  std::function<void(const nlohmann::json&)> on_point;
};
std::vector<nlohmann::json> passkey_trace(CausalLM& model, const Tokenizer& tok, const PasskeyTraceOptions& o);

// The summary table printed by the CLI: one row per length, one column per depth, plus time,
// peak RSS and state bytes per length.
std::string passkey_table(const std::vector<PasskeyCell>& cells);
// The length x depth heatmap.
std::string passkey_heatmap_svg(const std::vector<PasskeyCell>& cells, const std::string& title);

}  // namespace longctx
