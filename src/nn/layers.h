// Norms and feed-forward. Parameter names follow Hugging Face's Llama ("weight", "gate_proj", ...).
#pragma once
#include <torch/torch.h>

namespace longctx {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps = 1e-5);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;  // [dim], init 1
  double eps;
};
TORCH_MODULE(RMSNorm);

// SwiGLU: down(silu(gate(x)) * up(x)), no biases.
class SwiGLUImpl : public torch::nn::Module {
 public:
  SwiGLUImpl(int64_t dim, int64_t hidden);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};  // [hidden, dim] x2, [dim, hidden]
};
TORCH_MODULE(SwiGLU);

}  // namespace longctx
