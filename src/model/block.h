// The standard block the model stacks around any Mixer (pre-norm, Llama layout). The Block
// interface is in mixers/mechanism.h; mechanisms with their own block shape (MEGALODON's
// two-hop block) define it beside their mixer.
#pragma once
#include <torch/torch.h>

#include "mixers/mechanism.h"
#include "nn/layers.h"

namespace longctx {

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
