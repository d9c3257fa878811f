// The run's data: corpora loaded, split by document (recorded in split.json), tokenized.
#pragma once
#include <nlohmann/json.hpp>

#include "text/corpus.h"
#include "text/tokenizer.h"
#include "train/config.h"

namespace longctx {

struct RunData {
  Split split;  // of the first corpus; the other corpora are all training data
  TokenStream train, val;
  nlohmann::json split_json() const;
};

TokenStream tokenize_documents(const std::vector<const Document*>& docs, const Tokenizer& tok,
                               const std::string& separator);
RunData prepare_data(const DataConfig& d, const Tokenizer& tok);

}  // namespace longctx
