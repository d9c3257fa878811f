// Model folders like the Hugging Face hub's: config.json, model.safetensors, and the tokenizer
// (tokenizer.model for SentencePiece). Training runs keep optimizer and trainer state beside them.
#pragma once
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/lm.h"
#include "text/tokenizer.h"

namespace longctx {

struct Pretrained {
  std::string dir;
  nlohmann::json config;  // the whole config.json (with overrides applied)
  ModelConfig model_config;
  CausalLM model{nullptr};
  std::unique_ptr<Tokenizer> tokenizer;
};

// The end-of-sequence ids generation stops at: generation_config.json's eos_token_id (a number or a
// list), else config.json's, for Hugging Face folders; none for longctx's own models.
std::vector<int64_t> eos_token_ids(const Pretrained& p);

// Applies "a.b.c=value" overrides to a JSON object (value parsed as JSON, else a string).
void apply_overrides(nlohmann::json& j, const std::vector<std::string>& overrides);

// Loads config.json, model.safetensors (F32/F16/BF16 stored) and the tokenizer. The weights are
// read once, tensor by tensor, straight into the model; with weight_policy().keep_stored (the
// default) the F16 / BF16 matrices of Linear and Embedding layers stay in that dtype and are
// multiplied as nn/linear.h says (activations are float32 throughout), else they are widened to
// float32 at load. Overrides change the config before the model is built (e.g.
// model.mixer.type=sliding_window).
Pretrained load_pretrained(const std::string& dir, const std::vector<std::string>& overrides = {});

// Writes model.safetensors (atomic) with every parameter under its name; dtype F32, F16 or BF16.
void save_weights(const std::string& path, CausalLM& model, const std::string& dtype = "F32",
                  const std::map<std::string, std::string>& extra_metadata = {});
void load_weights(const std::string& path, CausalLM& model);
// The same, for a weight transfer between mixers: names containing one of `ignore` need not
// match. Such tensors of the file are skipped, and such parameters of the model that the file
// lacks keep their initialisation (e.g. Infini-attention's projections into a TransformerFAM
// model: ignore "memory_gate" and "fam_init"). Every other parameter must be in the file.
// `copies` maps a name fragment of the model to one of the file: a parameter the file lacks
// whose name contains a key is initialised from the file's tensor named with the key replaced by
// its value (Activation Beacon's {"beacon_q_proj": "q_proj"}: the beacons' projections start as
// copies of the base model's).
void load_weights(const std::string& path, CausalLM& model, const std::vector<std::string>& ignore,
                  const std::map<std::string, std::string>& copies = {}, bool keep_stored = false);

// Fills parameter `p` from entry `e` of `f`. When `keep_stored`, `p` is one of `matrices` (a
// Linear or Embedding weight) and the file holds it as F16 / BF16, `p` takes that dtype and the
// bytes are read straight into it; otherwise they are converted into p's dtype.
void fill_weight(torch::Tensor& p, const SafetensorsReader& f, const TensorEntry& e, bool keep_stored,
                 const std::set<const c10::TensorImpl*>& matrices);
// The same from a tensor already in memory (a part of a fused tensor).
void fill_weight(torch::Tensor& p, const torch::Tensor& t, bool keep_stored, const std::set<const c10::TensorImpl*>& matrices);

// The parameter tensors of a model by name (tied weights once).
std::vector<std::pair<std::string, torch::Tensor>> named_weights(CausalLM& model);

}  // namespace longctx
