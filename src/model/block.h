// Blocks: the unit the model stacks. The standard block wraps any Mixer (pre-norm, Llama
// layout); mechanisms with their own block shape implement Block directly.
#pragma once
#include <torch/torch.h>

#include "mixers/megalodon.h"
#include "mixers/mixer.h"
#include "nn/layers.h"

namespace longctx {

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

// x + mixer(norm(x)), then h + mlp(norm(h)).
class PreNormBlock : public Block {
 public:
  PreNormBlock(std::shared_ptr<Mixer> mixer, int64_t d_model, int64_t d_ff, double eps);
  torch::Tensor forward(const torch::Tensor& x, State& state, StepContext& ctx) override;
  Mixer* mixer() override { return self_attn.get(); }

  RMSNorm input_layernorm{nullptr};
  std::shared_ptr<Mixer> self_attn;
  RMSNorm post_attention_layernorm{nullptr};
  SwiGLU mlp{nullptr};
};

// MEGALODON's block (MECHANISMS.md section 2), with the "two-hop" residual: the feed-forward's
// residual is the block input, not the MEGA layer's output.
//   y = x + MEGA(x);   out = x + FFN(LayerNorm(y))      LayerNorm scale (1 + w)
class MegalodonBlock : public Block {
 public:
  MegalodonBlock(std::shared_ptr<MegalodonMixer> mixer, int64_t d_model, int64_t d_ff, double eps);
  torch::Tensor forward(const torch::Tensor& x, State& state, StepContext& ctx) override;
  Mixer* mixer() override { return mega.get(); }
  bool own_init() const override { return true; }
  void reset_parameters() override;

  std::shared_ptr<MegalodonMixer> mega;
  LayerNorm1p norm{nullptr};
  SwiGLU mlp{nullptr};
};

}  // namespace longctx
