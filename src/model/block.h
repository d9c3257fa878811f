// Blocks: the unit the model stacks. The standard block wraps any Mixer (pre-norm, Llama
// layout); mechanisms with their own block shape implement Block directly.
#pragma once
#include <torch/torch.h>

#include "mixers/mixer.h"
#include "nn/layers.h"

namespace longctx {

class Block : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(const torch::Tensor& x, State& state, StepContext& ctx) = 0;
  virtual Mixer* mixer() { return nullptr; }
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

}  // namespace longctx
