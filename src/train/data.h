// The run's data: corpora loaded, split by document (recorded in split.json), tokenized.
#pragma once
#include <nlohmann/json.hpp>

#include <random>

#include <memory>

#include "text/litm_tasks.h"   // the lost-in-the-middle generators
#include "text/ruler_tasks.h"  // RULER's task generators
#include "text/corpus.h"
#include "text/passkey.h"
#include "text/tokenizer.h"
#include "train/config.h"

namespace longctx {

struct RunData {
  Split split;  // of the first corpus; the other corpora are all training data
  TokenStream train, val;
  NoiseStats noise;  // of the training stream (data.noise)
  nlohmann::json split_json() const;
};

TokenStream tokenize_documents(const std::vector<const Document*>& docs, const Tokenizer& tok,
                               const std::string& separator);
RunData prepare_data(const DataConfig& d, const Tokenizer& tok);

// One training batch: inputs, targets and per-target loss weights (undefined: all weigh 1).
struct Batch {
  torch::Tensor x, y, w;  // [B, T] int64, int64, float32
  torch::Tensor valid;    // [B, T] bool: targets that may be scored for selection (not on a
                          // document boundary, not a zero-weight passkey token)
};

// A key of n digits, all different, the first not zero (n > 1): the order of its digits is the
// only way to tell what follows each one.
int64_t distinct_digit_key(std::mt19937_64& rng, int64_t n);

// The training batches of a run: random text windows (BatchSampler), and with data.passkey
// passkey prompts + answers mixed in, with data.ruler RULER task samples + reference answers. Batch (step, micro) depends only on (seed, step, micro).
class TrainBatches {
 public:
  TrainBatches(const DataConfig& d, const TokenStream& train, const Tokenizer& tok, int64_t batch, uint64_t seed);
  Batch get(int64_t step, int64_t micro) const;
  // The curriculum: the longest passkey prompt at `step`.
  int64_t max_prompt_length(int64_t step) const;
  // The RULER tasks in the mixture, and one line per task left out (why).
  const std::vector<std::string>& ruler_tasks() const { return ruler_tasks_; }
  const std::vector<std::string>& ruler_left_out() const { return ruler_left_out_; }

  // One RULER row's tokens and weights (prompt, answer, newline), before the text that fills it.
  void ruler_row(std::mt19937_64& rng, std::vector<int64_t>* row, std::vector<float>* wt) const;

 private:
  DataConfig d_;
  const TokenStream& s_;
  BatchSampler text_;
  PasskeyBuilder pk_;
  const Tokenizer& tok_;
  std::shared_ptr<const ruler::Resources> ruler_res_;
  std::vector<std::string> ruler_tasks_, ruler_left_out_;
  std::vector<int64_t> ruler_min_;  // per task in the mixture: its smallest budget
  std::vector<litm::Passage> passages_;  // litm_qa's documents
  std::vector<int64_t> newline_;
  int64_t b_;
  uint64_t seed_;
};

}  // namespace longctx
