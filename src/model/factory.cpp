#include "model/factory.h"

#include "mixers/activation_beacon.h"
#include "mixers/attention.h"
#include "mixers/fam.h"
#include "mixers/infini_attention.h"
#include "mixers/megalodon.h"

namespace longctx {

namespace {

// One line per mechanism; each declares how it is checked and built (mixers/mechanism.h).
const std::vector<Mechanism>& registry() {
  static const std::vector<Mechanism> r = {
      attention_mechanism(false),  // full_attention
      attention_mechanism(true),   // sliding_window
      infini_mechanism(),          // infini_attention
      megalodon_mechanism(),       // megalodon
      fam_mechanism(false),        // bswa
      fam_mechanism(true),         // fam
      beacon_mechanism(),          // activation_beacon
  };
  return r;
}

const Mechanism& find(const ModelConfig& c, const std::string& where) {
  std::string t = c.mixer_type();
  for (auto& m : registry())
    if (t == m.type) return m;
  std::string known;
  for (auto& m : registry()) known += (known.empty() ? "" : ", ") + m.type;
  fail(where, ": field 'model.mixer.type' = '", t, "' is not a known mixer (", known, ")");
}

}  // namespace

LayerSpec layer_spec(const ModelConfig& c, const std::string& where) {
  LayerSpec s;
  s.d_model = c.d_model;
  s.n_heads = c.n_heads;
  s.d_ff = c.ffn_dim();
  s.max_position_embeddings = c.max_position_embeddings;
  s.norm_eps = c.norm_eps;
  s.init_std = c.init_std;
  s.rope_theta = c.rope_theta;
  s.mixer = c.mixer;
  s.rope_scaling = c.rope_scaling;
  s.where = where;
  return s;
}

std::vector<std::string> mixer_types() {
  std::vector<std::string> v;
  for (auto& m : registry()) v.push_back(m.type);
  return v;
}

void validate_mixer_config(const ModelConfig& c, const std::string& where) {
  auto& m = find(c, where);
  LCX_CHECK(c.rope_scaling.is_null() || m.rope_scaling, where, ": field 'model.rope_scaling' does not apply to '",
            m.type, "' (only to the mixers with plain RoPE attention: ", [] {
              std::string s;
              for (auto& r : registry())
                if (r.rope_scaling) s += (s.empty() ? "" : ", ") + r.type;
              return s;
            }(), ")");
  m.validate(layer_spec(c, where));
}

std::shared_ptr<Block> make_block(const ModelConfig& c, int64_t layer) {
  auto& m = find(c, "config");
  auto spec = layer_spec(c, "config");
  if (m.make_block) return m.make_block(spec, layer);
  auto mixer = m.make_mixer(spec, layer);
  if (layer == 0) mixer->hold_first_layer_parameters(c.init_std);
  return std::make_shared<PreNormBlock>(mixer, c.d_model, c.ffn_dim(), c.norm_eps);
}

int64_t timestep_final_norm_groups(const ModelConfig& c) {
  auto& m = find(c, "config");
  return m.final_norm_groups ? m.final_norm_groups(layer_spec(c, "config")) : 0;
}

}  // namespace longctx
