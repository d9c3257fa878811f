#include "mixers/projections.h"

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
}

}  // namespace longctx
