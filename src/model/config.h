// Model configuration: the "model" object of config.json. Every field validated; unknown fields
// rejected by name. Mechanism-specific fields live in "mixer" and are parsed by the factory.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "io/config_fields.h"

namespace longctx {

struct ModelConfig {
  int64_t vocab_size = 256;   // from the tokenizer
  int64_t d_model = 256;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t d_ff = 0;           // 0: 8/3 d_model rounded up to a multiple of 32 (SwiGLU)
  double norm_eps = 1e-5;
  bool tie_embeddings = false;
  double init_std = 0.02;     // GPT-2 init; output projections scaled by 1/sqrt(2 n_layers)
  double rope_theta = 10000;  // RoPE base
  // Hugging Face's `rope_scaling` object (null: none), same fields and meaning (nn/rope_scaling.h);
  // applies to the attention mixers' RoPE.
  nlohmann::json rope_scaling;
  int64_t max_position_embeddings = 0;  // HF's field; 0 = unset (longrope's default factor uses it)
  nlohmann::json mixer = {{"type", "full_attention"}};

  template <class V>
  void visit(V& v) {
    v("vocab_size", vocab_size, "vocabulary size (default: the tokenizer's)", within<int64_t>(1, int64_t(1) << 24));
    v("d_model", d_model, "model width", above<int64_t>(0));
    v("n_layers", n_layers, "layers", above<int64_t>(0));
    v("n_heads", n_heads, "attention heads (d_model / n_heads even)", above<int64_t>(0));
    v("d_ff", d_ff, "feed-forward width (0 = 8/3 d_model rounded up to 32)", at_least<int64_t>(0, " (0 = 8/3 d_model)"));
    v("norm_eps", norm_eps, "epsilon of the norms", above(0.0));
    v("tie_embeddings", tie_embeddings, "share the input embedding and the output projection");
    v("init_std", init_std, "GPT-2 initialisation's standard deviation", above(0.0));
    v("rope_theta", rope_theta, "RoPE base", above(1.0));
    v("rope_scaling", rope_scaling, "Hugging Face's rope_scaling object (linear, dynamic, yarn, longrope); null = none");
    v("max_position_embeddings", max_position_embeddings, "Hugging Face's field; 0 = unset", at_least<int64_t>(0),
      Write::unless_default);
    v("mixer", mixer, "the mechanism: {\"type\": one of the mixers, and its own fields}");
  }

  static constexpr int64_t kMaxLayers = 4096, kMaxWidth = 65536;  // checked by from_json
  // The parameter count of the standard layout's dominant terms (embeddings, attention and
  // feed-forward matrices), for refusing configs that cannot fit before anything is allocated.
  double approx_parameters() const;
  int64_t ffn_dim() const { return d_ff > 0 ? d_ff : ((8 * d_model / 3 + 31) / 32) * 32; }
  std::string mixer_type() const { return mixer.value("type", "full_attention"); }
  nlohmann::json to_json() const;
  // `where` names the file for error messages.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& where);
  // FNV-1a 64 of the canonical JSON: stored in checkpoints and states, checked on load.
  std::string hash() const;
};

}  // namespace longctx
