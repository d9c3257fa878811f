#include "model/factory.h"

#include "io/json_fields.h"
#include "mixers/activation_beacon.h"
#include "mixers/attention.h"
#include "mixers/fam.h"
#include "mixers/infini_attention.h"
#include "mixers/megalodon.h"

namespace longctx {

namespace {

RopeOptions rope_of(const ModelConfig& c) {
  RopeOptions r;
  r.dim = c.d_model / c.n_heads;
  r.base = c.rope_theta;
  return r;
}

std::shared_ptr<Mixer> attention_mixer(const ModelConfig& c, const std::string& where, bool sliding) {
  Fields f(c.mixer, where, "model.mixer");
  f.get<std::string>("type", "");
  auto o = AttentionMixerOptions::parse(f, c.d_model, c.n_heads, rope_of(c), sliding);
  f.done();
  o.scaling = RopeScaling::parse(c.rope_scaling, c.max_position_embeddings, where);
  return std::make_shared<AttentionMixer>(o);
}

std::shared_ptr<Mixer> beacon_mixer(const ModelConfig& c, const std::string& where) {
  Fields f(c.mixer, where, "model.mixer");
  f.get<std::string>("type", "");
  auto a = AttentionMixerOptions::parse(f, c.d_model, c.n_heads, rope_of(c), false);
  auto b = BeaconOptions::parse(f, c.max_position_embeddings);
  f.done();
  return std::make_shared<BeaconMixer>(a, b);
}

std::shared_ptr<Mixer> infini_mixer(const ModelConfig& c, const std::string& where) {
  Fields f(c.mixer, where, "model.mixer");
  f.get<std::string>("type", "");
  auto o = InfiniAttentionOptions::parse(f, c.d_model, c.n_heads, rope_of(c));
  f.done();
  return std::make_shared<InfiniAttentionMixer>(o);
}

std::shared_ptr<Mixer> megalodon_mixer(const ModelConfig& c, const std::string& where) {
  Fields f(c.mixer, where, "model.mixer");
  f.get<std::string>("type", "");
  auto o = MegalodonOptions::parse(f, c.d_model, c.n_heads, c.norm_eps);
  f.done();
  return std::make_shared<MegalodonMixer>(o);
}

std::shared_ptr<Mixer> fam_mixer(const ModelConfig& c, const std::string& where, bool fam) {
  Fields f(c.mixer, where, "model.mixer");
  f.get<std::string>("type", "");
  auto o = FamOptions::parse(f, c.d_model, c.n_heads, rope_of(c), fam);
  f.done();
  return std::make_shared<FamMixer>(o);
}

// How a mechanism's layers are stacked: the pre-norm (Llama) block with an RMSNorm before the
// output projection, or MEGALODON's two-hop block with a TimestepNorm there.
enum class Shape { pre_norm, megalodon };

struct Entry {
  const char* type;
  std::shared_ptr<Mixer> (*make)(const ModelConfig&, const std::string&);
  Shape shape = Shape::pre_norm;
};

// One line per mechanism.
const Entry kMixers[] = {
    {"full_attention", [](const ModelConfig& c, const std::string& w) { return attention_mixer(c, w, false); }},
    {"sliding_window", [](const ModelConfig& c, const std::string& w) { return attention_mixer(c, w, true); }},
    {"infini_attention", infini_mixer},
    {"megalodon", megalodon_mixer, Shape::megalodon},
    {"bswa", [](const ModelConfig& c, const std::string& w) { return fam_mixer(c, w, false); }},
    {"fam", [](const ModelConfig& c, const std::string& w) { return fam_mixer(c, w, true); }},
    {"activation_beacon", beacon_mixer},
};

const Entry& find(const ModelConfig& c, const std::string& where) {
  std::string t = c.mixer_type();
  for (auto& e : kMixers)
    if (t == e.type) return e;
  std::string known;
  for (auto& e : kMixers) known += std::string(known.empty() ? "" : ", ") + e.type;
  fail(where, ": field 'model.mixer.type' = '", t, "' is not a known mixer (", known, ")");
}

}  // namespace

std::vector<std::string> mixer_types() {
  std::vector<std::string> v;
  for (auto& e : kMixers) v.push_back(e.type);
  return v;
}

void validate_mixer_config(const ModelConfig& c, const std::string& where) {
  torch::NoGradGuard ng;
  // Building one mixer runs its parser; the weights are small and discarded.
  ModelConfig probe = c;
  auto& e = find(c, where);
  LCX_CHECK(c.rope_scaling.is_null() || c.mixer_type() == "full_attention" || c.mixer_type() == "sliding_window",
            where, ": field 'model.rope_scaling' applies to the attention mixers (full_attention, sliding_window), not '",
            c.mixer_type(), "'");
  e.make(probe, where);
}

std::shared_ptr<Block> make_block(const ModelConfig& c, int64_t layer) {
  auto& e = find(c, "config");
  auto mixer = e.make(c, "config");
  if (e.shape == Shape::megalodon)
    return std::make_shared<MegalodonBlock>(std::dynamic_pointer_cast<MegalodonMixer>(mixer), c.d_model, c.ffn_dim(),
                                            c.norm_eps);
  if (layer == 0) mixer->hold_first_layer_parameters(c.init_std);
  return std::make_shared<PreNormBlock>(mixer, c.d_model, c.ffn_dim(), c.norm_eps);
}

int64_t timestep_final_norm_groups(const ModelConfig& c) {
  auto& e = find(c, "config");
  if (e.shape != Shape::megalodon) return 0;
  Fields f(c.mixer, "config", "model.mixer");
  return f.get<int64_t>("groups", MegalodonOptions{}.groups);
}

}  // namespace longctx
