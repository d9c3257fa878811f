#include "model/config.h"

#include <cstdio>

#include "io/json_fields.h"
#include "model/factory.h"
#include "nn/rope_scaling.h"
#include "util/system.h"

namespace longctx {

nlohmann::json ModelConfig::to_json() const {
  nlohmann::ordered_json j;
  j["vocab_size"] = vocab_size;
  j["d_model"] = d_model;
  j["n_layers"] = n_layers;
  j["n_heads"] = n_heads;
  j["d_ff"] = d_ff;
  j["norm_eps"] = norm_eps;
  j["tie_embeddings"] = tie_embeddings;
  j["init_std"] = init_std;
  j["rope_theta"] = rope_theta;
  j["rope_scaling"] = rope_scaling;
  if (max_position_embeddings > 0) j["max_position_embeddings"] = max_position_embeddings;
  j["mixer"] = mixer;
  return nlohmann::json(j);
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& where) {
  Fields f(j, where, "model");
  ModelConfig c;
  c.vocab_size = f.get<int64_t>("vocab_size", c.vocab_size);
  f.check(c.vocab_size > 0 && c.vocab_size <= (1 << 24), "vocab_size", c.vocab_size, "must be in [1, 2^24]");
  c.d_model = f.get<int64_t>("d_model", c.d_model);
  f.check(c.d_model > 0, "d_model", c.d_model, "must be > 0");
  c.n_layers = f.get<int64_t>("n_layers", c.n_layers);
  f.check(c.n_layers > 0, "n_layers", c.n_layers, "must be > 0");
  c.n_heads = f.get<int64_t>("n_heads", c.n_heads);
  f.check(c.n_heads > 0 && c.d_model % c.n_heads == 0 && (c.d_model / c.n_heads) % 2 == 0, "n_heads",
          c.n_heads, "must divide d_model into even head widths");
  c.d_ff = f.get<int64_t>("d_ff", c.d_ff);
  f.check(c.d_ff >= 0, "d_ff", c.d_ff, "must be >= 0 (0 = 8/3 d_model)");
  c.norm_eps = f.get<double>("norm_eps", c.norm_eps);
  f.check(c.norm_eps > 0, "norm_eps", c.norm_eps, "must be > 0");
  c.tie_embeddings = f.get<bool>("tie_embeddings", c.tie_embeddings);
  c.init_std = f.get<double>("init_std", c.init_std);
  f.check(c.init_std > 0, "init_std", c.init_std, "must be > 0");
  c.rope_theta = f.get<double>("rope_theta", c.rope_theta);
  f.check(c.rope_theta > 1, "rope_theta", c.rope_theta, "must be > 1");
  c.max_position_embeddings = f.get<int64_t>("max_position_embeddings", 0);
  f.check(c.max_position_embeddings >= 0, "max_position_embeddings", c.max_position_embeddings, "must be >= 0");
  // Validated here and stored normalised (the same meaning, written the way to_json writes it).
  c.rope_scaling = RopeScaling::parse(f.raw("rope_scaling"), c.max_position_embeddings, where).to_json();
  if (f.has("mixer")) {
    c.mixer = f.raw("mixer");
    LCX_CHECK(c.mixer.is_object() && c.mixer.contains("type") && c.mixer["type"].is_string(), where,
              ": field 'model.mixer' must be an object with a string 'type'");
  }
  f.done();
  // Before anything is allocated (validate_mixer_config builds a mixer): dimensions within
  // hard limits, and the weights' float32 size from the dominant terms within this machine's
  // memory, so a config that cannot fit is refused by name instead of hanging in allocation.
  LCX_CHECK(c.n_layers <= kMaxLayers, where, ": field 'model.n_layers' = ", c.n_layers, " is above the limit ",
            kMaxLayers);
  LCX_CHECK(c.d_model <= kMaxWidth, where, ": field 'model.d_model' = ", c.d_model, " is above the limit ", kMaxWidth);
  LCX_CHECK(c.ffn_dim() <= 8 * kMaxWidth, where, ": field 'model.d_ff' = ", c.ffn_dim(), " is above the limit ",
            8 * kMaxWidth);
  const double bytes = 4.0 * c.approx_parameters();
  const int64_t avail = available_memory_bytes();
  const double limit = avail > 0 ? double(avail) : double(int64_t(1) << 40);
  LCX_CHECK(bytes <= limit, where, ": the model's weights would take ", human_bytes(bytes), " in float32 (n_layers ",
            c.n_layers, ", d_model ", c.d_model, ", d_ff ", c.ffn_dim(), ", vocab_size ", c.vocab_size, "), more than ",
            avail > 0 ? "the memory available on this machine, " : "the limit ", human_bytes(limit));
  validate_mixer_config(c, where);
  return c;
}

double ModelConfig::approx_parameters() const {
  const double D = double(d_model), F = double(ffn_dim()), V = double(vocab_size), L = double(n_layers);
  return V * D * (tie_embeddings ? 1 : 2) + L * (4 * D * D + 3 * D * F + 2 * D) + D;
}

std::string ModelConfig::hash() const {
  std::string s = to_json().dump();
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)h);
  return buf;
}

}  // namespace longctx
