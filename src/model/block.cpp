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

MegalodonBlock::MegalodonBlock(std::shared_ptr<MegalodonMixer> mixer, int64_t d_model, int64_t d_ff, double eps) {
  mega = register_module("mega", std::move(mixer));
  norm = register_module("norm", LayerNorm1p(d_model, eps));
  mlp = register_module("mlp", SwiGLU(d_model, d_ff));
}

torch::Tensor MegalodonBlock::forward(const torch::Tensor& x, State& state, StepContext& ctx) {
  auto y = x + mega->forward(x, state, ctx);
  return x + mlp(norm(y));
}

void MegalodonBlock::reset_parameters() {
  mega->reset_parameters();
  torch::NoGradGuard ng;
  for (auto* l : {&mlp->gate_proj, &mlp->up_proj, &mlp->down_proj}) (*l)->reset_parameters();
}

}  // namespace longctx
