// The four projections of an attention-style mixer, with Hugging Face's names (biases on q, k and
// v only when qkv_bias, as Qwen2 has them; never on o),
// registered on the mixer in the order q_proj, k_proj, v_proj, o_proj (the order fixes which
// random numbers each gets at initialisation).
#pragma once
#include <torch/torch.h>

#include "nn/linear.h"

namespace longctx {

// q: d_model -> q_out; k, v: d_model -> kv_out; o: q_out -> d_model.
void register_qkvo(torch::nn::Module& m, int64_t d_model, int64_t q_out, int64_t kv_out, Linear& q,
                   Linear& k, Linear& v, Linear& o, bool qkv_bias = false);

// x [..., d_model] -> [..., q_out + 2 kv_out]: q, k and v in one GEMM over the concatenated
// weights, plus the concatenated biases when the layers have them. Weights held in a stored
// dtype go through matmul_t (nn/linear.h).
torch::Tensor project_qkv(const torch::Tensor& x, const Linear& q, const Linear& k, const Linear& v);

}  // namespace longctx
