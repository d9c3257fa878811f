#include "model/block.h"

namespace longctx {

PreNormBlock::PreNormBlock(std::shared_ptr<Mixer> mixer, int64_t d_model, int64_t d_ff, double eps) {
  input_layernorm = register_module("input_layernorm", RMSNorm(d_model, eps));
  self_attn = register_module("self_attn", std::move(mixer));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(d_model, eps));
  mlp = register_module("mlp", SwiGLU(d_model, d_ff));
  self_attn->attach_layer({[this](const torch::Tensor& x) { return input_layernorm(x); },
                           [this](const torch::Tensor& a) { return a + mlp(post_attention_layernorm(a)); }});
}

torch::Tensor PreNormBlock::forward(const torch::Tensor& x, State& state, StepContext& ctx) {
  auto h = x + self_attn->forward(input_layernorm(x), state, ctx);
  return h + mlp(post_attention_layernorm(h));
}

}  // namespace longctx
