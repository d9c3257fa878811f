// The RoPE-scaling family, configured exactly like Hugging Face's `rope_scaling` (transformers'
// modeling_rope_utils): every method becomes a per-frequency divisor lambda_i >= 0 (new inverse
// frequency = theta_i / lambda_i, theta_i = base^(-2i/d)) and an attention factor that
// multiplies cos and sin. See MECHANISMS.md section 8.
//
//   linear   (PI)        lambda_i = factor
//   dynamic  (NTK)       base' = base ((factor len / L) - (factor - 1))^(d/(d-2)) when len > L,
//                        i.e. lambda_i = (base'/base)^(2i/d); L = original_max_position_embeddings
//   yarn                 HF's ramp between interpolation (theta/factor) and extrapolation over
//                        the dimensions between the beta_fast and beta_slow rotation counts;
//                        attention factor 0.1 ln(factor) + 1 (or the mscale ratio)
//   llama3               lambda_i = 1 for wavelengths < L / high_freq_factor, factor for those
//                        > L / low_freq_factor, 1 / ((1 - s) / factor + s) between, with
//                        s = (L / wavelength - low_freq_factor) / (high - low_freq_factor)
//   longrope             lambda_i = long_factor[i] when len > L else short_factor[i]; attention
//                        factor sqrt(1 + ln(factor) / ln L), factor = max_position_embeddings / L
//
// `len` is the number of positions the sequence spans (the largest position + 1). The
// LongRoPE paper's n_hat (the first n_hat positions keep the unscaled frequencies) is a longctx
// extension field, `"n_hat"`, absent from Hugging Face configs (0 = none).
#pragma once
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace longctx {

struct RopeScaling {
  std::string type;               // "" (none), "linear", "dynamic", "yarn", "longrope", "llama3"
  double factor = 1.0;
  int64_t original_max = 0;       // original_max_position_embeddings
  int64_t max_position = 0;       // the model's max_position_embeddings (longrope's default factor)
  double attention_factor = 0.0;  // 0: the type's default
  double beta_fast = 32.0, beta_slow = 1.0;  // yarn
  double mscale = 0.0, mscale_all_dim = 0.0;  // yarn (DeepSeek's variant), 0 = unset
  bool truncate = true;                       // yarn: round the ramp's ends to whole dimensions
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  std::vector<double> short_factor, long_factor;  // longrope, d/2 values each
  int64_t n_hat = 0;                              // longctx: positions < n_hat unscaled

  bool active() const { return !type.empty(); }
  // `j` is the rope_scaling object (null: none); `max_position_embeddings` is the model's field
  // (0 when unset); `where` names the file in errors.
  static RopeScaling parse(const nlohmann::json& j, int64_t max_position_embeddings, const std::string& where);
  nlohmann::json to_json() const;

  struct Plan {
    torch::Tensor lambda;  // [d/2] float64 divisors of the inverse frequencies
    double attention = 1.0;
  };
  // The divisors for head dim `dim`, RoPE base `base`, and a sequence spanning `len` positions.
  Plan plan(int64_t dim, double base, int64_t len) const;
};

}  // namespace longctx
