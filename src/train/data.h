// The run's data: corpora loaded, split by document (recorded in split.json), tokenized.
#pragma once
#include <nlohmann/json.hpp>

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

// The training batches of a run: random text windows (BatchSampler), and with data.passkey
// passkey prompts + answers mixed in. Batch (step, micro) depends only on (seed, step, micro).
class TrainBatches {
 public:
  TrainBatches(const DataConfig& d, const TokenStream& train, const Tokenizer& tok, int64_t batch, uint64_t seed);
  Batch get(int64_t step, int64_t micro) const;
  // The curriculum: the longest passkey prompt at `step`.
  int64_t max_prompt_length(int64_t step) const;

 private:
  DataConfig d_;
  const TokenStream& s_;
  BatchSampler text_;
  PasskeyBuilder pk_;
  std::vector<int64_t> newline_;
  int64_t b_;
  uint64_t seed_;
};

}  // namespace longctx
