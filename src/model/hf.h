// Hugging Face model folders as the hub has them: config.json of the llama, mistral, qwen2 and
// phi3 families, weights in model.safetensors or sharded through model.safetensors.index.json
// (F32 / F16 / BF16), tokenizer.json or tokenizer.model, generation_config.json. Their names are
// longctx's own (HF Llama's), except Phi-3's fused qkv_proj and gate_up_proj, which are split.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "model/lm.h"

namespace longctx {

// A folder whose config.json is Hugging Face's (a model_type, no longctx "model" object).
bool is_hf_folder(const std::string& dir);
// The same test on a config.json already read.
bool is_hf_config(const nlohmann::json& config);

// longctx's config ({"model": ..., "tokenizer": ...}) for a Hugging Face config.json. Refuses,
// naming the field, what the architecture here does not implement. `where` names the file.
nlohmann::json hf_to_longctx_config(const nlohmann::json& hf, const std::string& where);

// Loads the folder's weights into `model` (built from hf_to_longctx_config's model). Every
// parameter must be found; a tensor that is not a parameter (other than rotary_emb.inv_freq
// buffers) is an error naming it. Tensors are read one at a time straight into the model;
// keep_stored as fill_weight (model/pretrained.h) has it.
void load_hf_weights(const std::string& dir, const std::string& model_type, CausalLM& model, bool keep_stored = false);

struct Pretrained;
// Writes `p` as a Hugging Face folder that transformers loads: config.json (llama; mistral for a
// sliding window; qwen2 with q/k/v biases), model.safetensors in `dtype` (F32, F16, BF16),
// generation_config.json, and the tokenizer (tokenizer.json for the byte and BPE tokenizers:
// a byte-level file whose ids are the bytes; tokenizer.model for SentencePiece). Mechanisms
// transformers has no architecture for are refused by name.
void save_hf_folder(Pretrained& p, const std::string& out, const std::string& dtype);

// A byte-level tokenizer.json whose ids are the 256 byte values (longctx's byte tokenizer).
std::string byte_tokenizer_json();

}  // namespace longctx
