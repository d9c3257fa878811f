#include "mixers/projections.h"

#include "nn/stacked.h"

namespace longctx {

void register_qkvo(torch::nn::Module& m, int64_t d_model, int64_t q_out, int64_t kv_out, Linear& q,
                   Linear& k, Linear& v, Linear& o, bool qkv_bias) {
  auto lin = [](int64_t i, int64_t j, bool b) { return Linear(torch::nn::LinearOptions(i, j).bias(b)); };
  q = m.register_module("q_proj", lin(d_model, q_out, qkv_bias));
  k = m.register_module("k_proj", lin(d_model, kv_out, qkv_bias));
  v = m.register_module("v_proj", lin(d_model, kv_out, qkv_bias));
  o = m.register_module("o_proj", lin(q_out, d_model, false));
  if (qkv_bias) {  // zero at initialisation, like the HF models' training starts
    torch::NoGradGuard ng;
    q->bias.zero_(), k->bias.zero_(), v->bias.zero_();
  }
  stack_rows({q->weight, k->weight, v->weight});  // one buffer: project_qkv reads it in place
}

torch::Tensor project_qkv(const torch::Tensor& x, const Linear& q, const Linear& k, const Linear& v) {
  auto w = stacked_weight({q->weight, k->weight, v->weight});
  if (!q->bias.defined()) return matmul_t(x, w);
  auto b = torch::cat({q->bias, k->bias, v->bias});
  if (w.scalar_type() != x.scalar_type()) return matmul_t(x, w) + b;
  auto sizes = x.sizes().vec();
  sizes.back() = w.size(0);
  return torch::addmm(b, x.reshape({-1, x.size(-1)}), w.t()).view(sizes);
}

}  // namespace longctx
