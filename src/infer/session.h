// Streaming inference: a session holds the model's state; feed any amount of tokens (in chunks,
// so memory stays bounded by the mixer's state), sample, generate.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <random>

#include "model/lm.h"

namespace longctx {

struct SamplingOptions {
  double temperature = 0.8;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplingOptions o);
  int64_t sample(const torch::Tensor& logits);  // logits [V]
 private:
  SamplingOptions o_;
  std::mt19937_64 rng_;
};

// Reads tokens into `state` in calls of at most `chunk` tokens (batch 1, no autograd); returns the
// logits [V] after the last token (undefined when tokens is empty). on_chunk, when set, sees each
// call's hidden states [1, n, D] and the index of its first token (for per-token scores).
torch::Tensor feed_tokens(CausalLM& model, ModelState& state, const std::vector<int64_t>& tokens, int64_t chunk,
                          const std::function<void(const torch::Tensor& hidden, size_t first)>& on_chunk = {});

class Session {
 public:
  explicit Session(CausalLM model, int64_t chunk = 512);
  // Feeds tokens; returns the logits [V] after the last one.
  torch::Tensor feed(const std::vector<int64_t>& tokens);
  // Generates up to max_tokens (stops early when on_token returns false).
  std::vector<int64_t> generate(int64_t max_tokens, const SamplingOptions& o,
                                const std::function<bool(int64_t)>& on_token = {});
  ModelState& state() { return state_; }
  void reset();
  int64_t tokens_seen() const { return state_.tokens; }

 private:
  CausalLM model_;
  ModelState state_;
  int64_t chunk_;
  torch::Tensor last_logits_;
};

}  // namespace longctx
