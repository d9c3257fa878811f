// Norms and feed-forward. Parameter names follow Hugging Face's Llama ("weight", "gate_proj", ...).
#pragma once
#include <torch/torch.h>

#include "nn/linear.h"

namespace longctx {

class RMSNormImpl : public torch::nn::Module {
 public:
  // unit_offset: the scale is (1 + weight) with weight initialised to 0 (MEGALODON's
  // reparameterisation); otherwise the scale is weight, initialised to 1 (Llama).
  RMSNormImpl(int64_t dim, double eps = 1e-5, bool unit_offset = false);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  // [dim]
  double eps;
  bool unit_offset;
};
TORCH_MODULE(RMSNorm);

// LayerNorm with the scale reparameterised as (1 + weight), weight and bias initialised to 0.
class LayerNorm1pImpl : public torch::nn::Module {
 public:
  LayerNorm1pImpl(int64_t dim, double eps = 1e-5);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;  // [dim]
  double eps;
};
TORCH_MODULE(LayerNorm1p);

// SwiGLU: down(silu(gate(x)) * up(x)), no biases.
class SwiGLUImpl : public torch::nn::Module {
 public:
  SwiGLUImpl(int64_t dim, int64_t hidden);
  torch::Tensor forward(const torch::Tensor& x);
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};  // [hidden, dim] x2, [dim, hidden]
};
TORCH_MODULE(SwiGLU);

}  // namespace longctx
