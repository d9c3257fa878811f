// Bits per byte over a long document, streamed: the document is cut into windows of `context`
// tokens (consecutive windows share one token, so every token but the first is scored once);
// each window starts from a fresh state and is fed in chunks, so memory is bounded by the
// mixer's state, not by the context.
#pragma once
#include <cstdint>
#include <vector>

#include "model/lm.h"

namespace longctx {

struct PplOptions {
  int64_t context = 1024;  // tokens per window; 0 = the whole document in one window
  int64_t chunk = 512;     // tokens per forward call
  int64_t batch_tokens = 16384;  // windows evaluated together: max(1, batch_tokens / context)
  bool progress = true;
};

struct PplResult {
  int64_t context = 0, windows = 0, tokens_scored = 0;
  double bytes_scored = 0, nll_nats = 0, bits_per_byte = 0, nats_per_token = 0;
  double seconds = 0, tokens_per_s = 0;
  int64_t peak_rss = 0, state_bytes = 0;  // state bytes at the end of a window
};

// bytes_per_token converts token counts to bytes (1 for the byte tokenizer).
PplResult eval_bits_per_byte(CausalLM& model, const std::vector<int64_t>& tokens, double bytes_per_token,
                             const PplOptions& o);

}  // namespace longctx
