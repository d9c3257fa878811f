#include "mixers/infini_attention.h"

#include <cmath>
#include <limits>

#include "mixers/projections.h"

namespace longctx {

InfiniAttentionOptions InfiniAttentionOptions::parse(Fields& f, int64_t d_model, int64_t n_heads,
                                                     const RopeOptions& rope) {
  InfiniAttentionOptions o;
  o.d_model = d_model;
  o.n_heads = n_heads;
  o.segment = f.get<int64_t>("segment", o.segment);
  f.check(o.segment > 0, "segment", o.segment, "must be > 0");
  auto rule = f.get<std::string>("update", "delta");
  f.check(rule == "delta" || rule == "linear", "update", rule, "must be \"delta\" or \"linear\"");
  o.delta = rule == "delta";
  o.detach_every = f.get<int64_t>("detach_every", 0);
  f.check(o.detach_every >= 0, "detach_every", o.detach_every, "must be >= 0 (0 = never)");
  o.gate_init = f.get<double>("gate_init", o.gate_init);
  f.check(std::isfinite(o.gate_init), "gate_init", o.gate_init, "must be finite");
  o.eps = f.get<double>("eps", o.eps);
  f.check(o.eps > 0 && o.eps < 1, "eps", o.eps, "must be in (0, 1)");
  o.read_memory = f.get<bool>("read_memory", true);
  o.rope = rope;
  return o;
}

InfiniAttentionMixer::InfiniAttentionMixer(InfiniAttentionOptions o) : o_(o), rope_(o.rope) {
  dh_ = o_.d_model / o_.n_heads;
  register_qkvo(*this, o_.d_model, o_.d_model, o_.d_model, q_proj, k_proj, v_proj, o_proj);
  memory_gate = register_parameter("memory_gate", torch::full({o_.n_heads}, o_.gate_init));
}

std::map<std::string, std::vector<double>> InfiniAttentionMixer::diagnostics() const {
  auto g = torch::sigmoid(memory_gate.detach().to(torch::kCPU, torch::kFloat64)).contiguous();
  return {{"gate", std::vector<double>(g.data_ptr<double>(), g.data_ptr<double>() + g.numel())}};
}

torch::Tensor infini_memory_read(const torch::Tensor& sq, const torch::Tensor& M, const torch::Tensor& z,
                                 double eps) {
  auto num = torch::matmul(sq, M);                // [B,H,T,dv]
  auto den = torch::matmul(sq, z.unsqueeze(-1));  // [B,H,T,1]
  return num / den.clamp_min(eps);                // 0/0 before the first update reads 0
}

void infini_memory_update(torch::Tensor& M, torch::Tensor& z, const torch::Tensor& sk, const torch::Tensor& v,
                          bool delta, double eps) {
  auto val = delta ? v - infini_memory_read(sk, M, z, eps) : v;
  M = M + torch::matmul(sk.transpose(-2, -1), val);
  z = z + sk.sum(2);
}

torch::Tensor InfiniAttentionMixer::forward(const torch::Tensor& x, State& state, StepContext&) {
  const int64_t B = x.size(0), T = x.size(1), H = o_.n_heads, N = o_.segment, d = dh_;
  const auto dt = x.scalar_type();
  const auto mdt = dt == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;  // memory dtype
  const int64_t pos0 = state.counter("pos");
  int64_t fill = state.counter("fill");
  LCX_CHECK(fill == pos0 % N, "infini_attention: state holds ", fill, " tokens of a partial segment at position ",
            pos0, " (segment ", N, ")");
  auto pos = torch::arange(pos0, pos0 + T, torch::kInt64);

  // One GEMM for q, k and v.
  auto w = torch::cat({q_proj->weight, k_proj->weight, v_proj->weight}, 0);
  auto qkv = torch::matmul(x, w.t()).view({B, T, 3 * H, d});
  auto parts = qkv.split_with_sizes({2 * H, H}, 2);
  auto rot = rope_.apply(parts[0], pos, /*time_dim=*/1).split_with_sizes({H, H}, 2);
  auto qr = rot[0].transpose(1, 2), kr = rot[1].transpose(1, 2);  // [B,H,T,d], local attention
  auto raw = parts[0].split_with_sizes({H, H}, 2);                 // memory: before RoPE
  auto sq = (torch::elu(raw[0].to(mdt)) + 1).transpose(1, 2);
  auto sk = (torch::elu(raw[1].to(mdt)) + 1).transpose(1, 2);
  auto v = parts[1].transpose(1, 2);

  if (!state.has("M")) {
    state.set("M", torch::zeros({B, H, d, d}, x.options().dtype(mdt)));
    state.set("z", torch::zeros({B, H, d}, x.options().dtype(mdt)));
  }
  auto M = state.at("M"), z = state.at("z");
  LCX_CHECK(M.size(0) == B, "infini_attention: state has batch ", M.size(0), ", input has ", B);

  // The partial segment (SegmentBuffer: fixed buffers without autograd, exact tensors with it).
  const bool graph = torch::GradMode::is_enabled();
  SegmentBuffer held(state, {"k", "v", "sk"}, N);
  held.reserve({kr, v, sk}, fill);

  const double scale = 1.0 / std::sqrt(double(d));
  auto gate = torch::sigmoid(memory_gate).to(dt).view({1, H, 1, 1});
  std::vector<torch::Tensor> outs;
  int64_t updates = pos0 / N;
  for (int64_t t = 0; t < T;) {
    const int64_t len = std::min(N - fill, T - t);
    auto seg = held.extend(fill, {kr.narrow(2, t, len), v.narrow(2, t, len), sk.narrow(2, t, len)});
    // Local causal attention: the query at segment offset fill+i sees keys 0..fill+i.
    auto scores = torch::matmul(qr.narrow(2, t, len), seg[0].transpose(-2, -1)) * scale;
    if (len > 1) {
      auto opt = torch::TensorOptions().dtype(torch::kInt64).device(x.device());
      auto hidden = torch::arange(fill + len, opt).unsqueeze(0) > (torch::arange(len, opt) + fill).unsqueeze(1);
      scores = scores.masked_fill(hidden, -std::numeric_limits<double>::infinity());
    }
    auto a_dot = torch::matmul(torch::softmax(scores, -1), seg[1]);
    if (o_.read_memory) {
      auto a_mem = infini_memory_read(sq.narrow(2, t, len), M, z, o_.eps).to(dt);
      outs.push_back(gate * a_mem + (1 - gate) * a_dot);
    } else {
      outs.push_back((1 - gate) * a_dot);
    }
    if (fill + len == N) {  // segment complete: fold it into memory
      infini_memory_update(M, z, seg[2], seg[1].to(mdt), o_.delta, o_.eps);
      ++updates;
      if (graph && o_.detach_every > 0 && updates % o_.detach_every == 0) {
        M = M.detach();
        z = z.detach();
      }
    }
    fill = held.advance(fill, len, seg);
    t += len;
  }
  state.set("M", M);
  state.set("z", z);
  state.set_counter("fill", fill);
  state.set_counter("pos", pos0 + T);
  auto y = (outs.size() == 1 ? outs[0] : torch::cat(outs, 2)).transpose(1, 2).reshape({B, T, H * d});
  return o_proj(y);
}

}  // namespace longctx
