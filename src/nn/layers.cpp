#include "nn/layers.h"

#include "nn/fused.h"
#include "nn/stacked.h"

namespace longctx {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_, bool unit_offset_) : eps(eps_), unit_offset(unit_offset_) {
  weight = register_parameter("weight", unit_offset ? torch::zeros({dim}) : torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  return fused_rms_norm(x, unit_offset ? weight + 1 : weight, eps);
}

LayerNorm1pImpl::LayerNorm1pImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::zeros({dim}));
  bias = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor LayerNorm1pImpl::forward(const torch::Tensor& x) {
  return torch::layer_norm(x, {x.size(-1)}, weight + 1, bias, eps);
}

SwiGLUImpl::SwiGLUImpl(int64_t dim, int64_t hidden) {
  auto o = [](int64_t i, int64_t o) { return torch::nn::LinearOptions(i, o).bias(false); };
  gate_proj = register_module("gate_proj", Linear(o(dim, hidden)));
  up_proj = register_module("up_proj", Linear(o(dim, hidden)));
  down_proj = register_module("down_proj", Linear(o(hidden, dim)));
  stack_rows({gate_proj->weight, up_proj->weight});  // one buffer: forward reads it in place
}

torch::Tensor SwiGLUImpl::forward(const torch::Tensor& x) {
  // gate and up in one GEMM (one buffer, or concatenated; the parameters keep their HF names)
  auto gu = matmul_t(x, stacked_weight({gate_proj->weight, up_proj->weight}));
  return down_proj(fused_swiglu(gu));
}

}  // namespace longctx
