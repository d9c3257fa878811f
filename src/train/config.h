// A run's config file: {"model", "tokenizer", "data", "train"}, each validated field by field.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "model/config.h"

namespace longctx {

struct TokenizerConfig {
  std::string type = "byte";  // byte | sentencepiece
  std::string path;           // sentencepiece: an existing tokenizer.model, or empty to train one
  int64_t vocab_size = 0;     // sentencepiece training: vocabulary size
};

struct DataConfig {
  std::vector<std::string> train = {"sotu"};  // corpora (text/corpus.h); split by document
  int64_t val_docs = 12;                      // documents of the first corpus held out
  uint64_t split_seed = 1234;
  int64_t seq_len = 256;
  std::string separator = "\n\n";             // between documents in the token stream
};

struct ParamGroupRule {
  std::string match;          // substring of the parameter name
  double lr_scale = 1.0;      // group lr = train.lr * lr_scale (follows the schedule)
  double weight_decay = 0.0;
};

struct TrainConfig {
  int64_t steps = 1000;
  int64_t batch_size = 16;
  int64_t grad_accum = 1;
  double lr = 3e-3;
  double min_lr_ratio = 0.1;  // cosine decays to lr * min_lr_ratio
  int64_t warmup_steps = 50;
  double weight_decay = 0.1;  // matrices only; vectors (norms) get 0
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double clip = 1.0;          // global grad-norm clip; 0 = off
  int64_t eval_every = 200;
  int64_t eval_batches = 16;
  int64_t checkpoint_every = 500;
  int64_t keep_checkpoints = 2;
  int64_t log_every = 10;
  uint64_t seed = 0;
  std::vector<ParamGroupRule> param_groups;
};

struct RunConfig {
  ModelConfig model;
  TokenizerConfig tokenizer;
  DataConfig data;
  TrainConfig train;
  nlohmann::json to_json() const;
  // `where` names the file in errors. vocab_size absent from "model" is taken from the tokenizer.
  static RunConfig from_json(const nlohmann::json& j, const std::string& where);
  static RunConfig from_file(const std::string& path, const std::vector<std::string>& overrides = {});
};

}  // namespace longctx
