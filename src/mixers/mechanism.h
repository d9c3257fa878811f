// What the model needs from a mechanism, declared by the mechanism itself: how its config is
// checked, how one layer is built, and what sits before the output projection. The model's
// factory holds one line per mechanism (model/factory.cpp) and knows nothing else about any.
#pragma once
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

#include "io/json_fields.h"
#include "mixers/mixer.h"
#include "nn/rope.h"

namespace longctx {

// The model config's fields a layer is built from (model/config.h fills it): the shared sizes,
// and the mechanism's own "mixer" object.
struct LayerSpec {
  int64_t d_model = 256, n_heads = 4, d_ff = 0;
  int64_t max_position_embeddings = 0;
  double norm_eps = 1e-5, init_std = 0.02, rope_theta = 10000;
  nlohmann::json mixer = nlohmann::json::object();
  nlohmann::json rope_scaling;  // Hugging Face's rope_scaling (null: none)
  std::string where = "config";  // names the file in errors
  // The rotate-halves RoPE over each head's width with the model's base.
  RopeOptions rope() const { return RopeOptions{d_model / n_heads, rope_theta, false}; }
};

// The unit the model stacks: one layer, reading and updating its State.
class Block : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x, State& state, StepContext& ctx) = 0;
  virtual Mixer* mixer() { return nullptr; }
  // The fields this layer keeps in its State (the mixer's, and the block's own if any).
  virtual StateSchema state_schema() { return mixer() ? mixer()->state_schema() : StateSchema{}; }
  // Blocks whose mechanism prescribes its own initialisation: the model leaves their
  // parameters out of its GPT-2 init and calls reset_parameters() instead.
  virtual bool own_init() const { return false; }
  virtual void reset_parameters() {}
};

struct Mechanism {
  std::string type;  // model.mixer.type
  // Reads and checks every field of spec.mixer, throwing with a message that names the field;
  // allocates no weights.
  std::function<void(const LayerSpec&)> validate;
  // The mixer of layer `layer`, for the standard pre-norm layer (model/block.h)...
  std::function<std::shared_ptr<Mixer>(const LayerSpec&, int64_t layer)> make_mixer;
  // ...or, for a mechanism with its own layer shape, the whole layer.
  std::function<std::shared_ptr<Block>(const LayerSpec&, int64_t layer)> make_block;
  // Groups of a TimestepNorm before the output projection; 0 = the standard RMSNorm.
  std::function<int64_t(const LayerSpec&)> final_norm_groups;
  // Whether model.rope_scaling applies to this mechanism's RoPE.
  bool rope_scaling = false;
};

// Runs parse(Fields&) over spec.mixer (its "type" read first), then refuses any field that
// parse did not read, by name. Returns what parse returns (a mechanism's options).
template <class F>
auto parse_mixer_fields(const LayerSpec& s, F&& parse) {
  Fields f(s.mixer, s.where, "model.mixer");
  f.get<std::string>("type", "");
  auto o = parse(f);
  f.done();
  return o;
}

}  // namespace longctx
