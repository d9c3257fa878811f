#include "model/config.h"

#include <cstdio>

#include "io/json_fields.h"
#include "model/factory.h"
#include "nn/rope_scaling.h"
#include "util/system.h"

namespace longctx {

nlohmann::json ModelConfig::to_json() const { return write_config(*this); }

ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& where) {
  Fields f(j, where, "model");
  ModelConfig c = read_config<ModelConfig>(f);
  f.check(c.d_model % c.n_heads == 0 && (c.d_model / c.n_heads) % 2 == 0, "n_heads", c.n_heads,
          "must divide d_model into even head widths");
  // Validated here and stored normalised (the same meaning, written the way to_json writes it).
  c.rope_scaling = RopeScaling::parse(c.rope_scaling, c.max_position_embeddings, where).to_json();
  LCX_CHECK(c.mixer.is_object() && c.mixer.contains("type") && c.mixer["type"].is_string(), where,
            ": field 'model.mixer' must be an object with a string 'type'");
  // Before anything is allocated: dimensions within
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
