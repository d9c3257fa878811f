#include "nn/attention.h"

#include <array>
#include <atomic>
#include <cmath>

#include "nn/attention_kernel.h"
#include "util/error.h"

namespace longctx {

namespace {

torch::Tensor visible(const torch::Tensor& qp, const torch::Tensor& kp, const AttentionOptions& o) {
  auto d = qp.unsqueeze(1) - kp.unsqueeze(0);  // [Tq, Tk]
  auto m = d >= 0;
  if (o.window > 0) m = m & ((d < o.window) | (kp.unsqueeze(0) < o.n_sink));
  return m;
}

torch::Tensor masked_attend(const torch::Tensor& scores, const torch::Tensor& mask, const torch::Tensor& v) {
  auto s = scores.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
  // A row that sees no key is all -inf: its NaN probabilities become 0 (a zero output).
  return torch::matmul(torch::softmax(s, -1).masked_fill(mask.logical_not(), 0), v);
}

// softmax(scale * q k^T + bias) v with the scale and the additive mask fused into one GEMM
// (baddbmm): no elementwise pass over the [Tq, Tk] scores besides the softmax.
torch::Tensor fused_attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                           const torch::Tensor& bias, double scale) {
  int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), d = q.size(3);
  auto q3 = q.reshape({B * H, Tq, d}), k3 = k.reshape({B * H, Tk, d}), v3 = v.reshape({B * H, Tk, v.size(3)});
  auto s = torch::baddbmm(bias.unsqueeze(0).expand({B * H, Tq, Tk}), q3, k3.transpose(1, 2), 1.0, scale);
  return torch::bmm(torch::softmax(s, -1), v3).view({B, H, Tq, v.size(3)});
}

torch::Tensor mask_bias(const torch::Tensor& mask, torch::ScalarType dt) {
  return torch::zeros(mask.sizes(), torch::TensorOptions().dtype(dt))
      .masked_fill_(mask.logical_not(), -std::numeric_limits<float>::infinity());
}

// The last dimension unit-strided, as BLAS needs; other strides are kept (no copy of a transposed view).
torch::Tensor rows(const torch::Tensor& t) { return t.stride(3) == 1 ? t : t.contiguous(); }

template <typename T, typename Tensor>
kernel::Strided<T> strided(Tensor& t) {
  if (!t.defined()) return {};
  return {static_cast<T*>(t.data_ptr()), t.stride(0), t.stride(1), t.stride(2)};
}

kernel::Shape shape_of(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  return {q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
}

kernel::Mask mask_of(const torch::Tensor& qp, const torch::Tensor& kp, int64_t window, int64_t n_sink, bool has_q_sink) {
  kernel::Mask m;
  m.q_pos = qp.data_ptr<int64_t>();
  m.k_pos = kp.data_ptr<int64_t>();
  m.window = window;
  m.n_sink = n_sink;
  m.split_sinks = n_sink > 0 && (window > 0 || has_q_sink);
  return m;
}

// A [B, H, T, d] result laid out as [B, T, H, d]: the caller's transpose back to [B, T, H * d]
// is then a view.
torch::Tensor heads_last(int64_t B, int64_t H, int64_t T, int64_t d, const torch::TensorOptions& to) {
  return torch::zeros({B, T, H, d}, to).permute({0, 2, 1, 3});
}

// The fused kernel's forward: the output and one log-sum-exp per query, with q, the pieces of k
// and v (one piece under autograd), and q_sink as the kernel read them (what backward needs).
struct ForwardPass {
  torch::Tensor q, q_sink, out, lse;
  std::vector<torch::Tensor> k, v;
};
ForwardPass forward_pass(torch::Tensor q, std::vector<torch::Tensor> k, std::vector<torch::Tensor> v,
                         torch::Tensor q_sink, const torch::Tensor& qp, const torch::Tensor& kp, int64_t window,
                         int64_t n_sink, double scale) {
  q = rows(q);
  for (auto& t : k) t = rows(t);
  for (auto& t : v) t = rows(t);
  // libtorch's Function takes no undefined input: no q_sink arrives as an empty tensor.
  q_sink = q_sink.defined() && q_sink.numel() ? rows(q_sink) : torch::Tensor();
  auto s = shape_of(q, k[0], v[0]);
  s.Tk = kp.numel();
  auto m = mask_of(qp, kp, window, n_sink, q_sink.defined());
  auto out = torch::empty({s.B, s.Tq, s.H, s.dv}, q.options()).permute({0, 2, 1, 3});
  auto lse = torch::empty({s.B, s.H, s.Tq}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_forward", [&] {
    kernel::KeyValues<scalar_t> kv;
    kv.n = static_cast<int>(k.size());
    for (int i = 0; i < kv.n; ++i) {
      kv.k[i] = strided<const scalar_t>(k[i]);
      kv.v[i] = strided<const scalar_t>(v[i]);
      kv.start[i + 1] = kv.start[i] + k[i].size(2);
    }
    kernel::attention_forward<scalar_t>(s, m, scalar_t(scale), strided<const scalar_t>(q),
                                        strided<const scalar_t>(q_sink), kv, strided<scalar_t>(out),
                                        lse.data_ptr<scalar_t>());
  });
  return {q, q_sink, out, lse, std::move(k), std::move(v)};
}

// The fused kernel as an autograd function: forward keeps only q, k, v, the output and one
// log-sum-exp per query; backward recomputes each score tile (no T x T tensor either way).
struct FusedAttention : torch::autograd::Function<FusedAttention> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor q, torch::Tensor k,
                               torch::Tensor v, torch::Tensor q_sink, torch::Tensor qp, torch::Tensor kp,
                               int64_t window, int64_t n_sink, double scale) {
    auto f = forward_pass(q, {k}, {v}, q_sink, qp, kp, window, n_sink, scale);
    ctx->save_for_backward(
        {f.q, f.k[0], f.v[0], f.q_sink.defined() ? f.q_sink : torch::empty({0}, q.options()), qp, kp, f.out, f.lse});
    ctx->saved_data["window"] = window;
    ctx->saved_data["n_sink"] = n_sink;
    ctx->saved_data["scale"] = scale;
    return f.out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto sv = ctx->get_saved_variables();
    auto q = sv[0], k = sv[1], v = sv[2], q_sink = sv[3].numel() ? sv[3] : torch::Tensor();
    auto qp = sv[4], kp = sv[5], out = sv[6], lse = sv[7];
    auto dout = rows(grads[0]);
    auto s = shape_of(q, k, v);
    auto m = mask_of(qp, kp, ctx->saved_data["window"].toInt(), ctx->saved_data["n_sink"].toInt(), q_sink.defined());
    auto dq = heads_last(s.B, s.H, s.Tq, s.dk, q.options());
    auto dqs = q_sink.defined() ? heads_last(s.B, s.H, s.Tq, s.dk, q.options()) : torch::Tensor();
    auto dk = torch::zeros(k.sizes(), k.options()), dv = torch::zeros(v.sizes(), v.options());
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "attention_backward", [&] {
      kernel::attention_backward<scalar_t>(
          s, m, scalar_t(ctx->saved_data["scale"].toDouble()), strided<const scalar_t>(q),
          strided<const scalar_t>(q_sink), strided<const scalar_t>(k), strided<const scalar_t>(v),
          strided<const scalar_t>(out), lse.data_ptr<scalar_t>(), strided<const scalar_t>(dout),
          strided<scalar_t>(dq), strided<scalar_t>(dqs), strided<scalar_t>(dk), strided<scalar_t>(dv));
    });
    return {dq, dk, dv, dqs, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

std::atomic<AttentionImpl> g_impl{AttentionImpl::fused};

}  // namespace

void set_attention_impl(AttentionImpl impl) { g_impl = impl; }
AttentionImpl attention_impl() { return g_impl; }

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& q_pos, const torch::Tensor& k_pos, const AttentionOptions& o,
                        const torch::Tensor& q_sink) {
  LCX_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "attention: q, k, v must be [B, H, T, dh]");
  int64_t Tq = q.size(2), Tk = k.size(2);
  LCX_CHECK(q_pos.numel() == Tq && k_pos.numel() == Tk, "attention: positions do not match T");
  LCX_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0 && v.size(1) == k.size(1),
            "attention: ", q.size(1), " query heads cannot share ", k.size(1), " key/value heads");
  double scale = o.scale > 0 ? o.scale : 1.0 / std::sqrt(double(q.size(3)));
  auto qp = q_pos.to(torch::kInt64).contiguous(), kp = k_pos.to(torch::kInt64).contiguous();
  if (q.device().is_cpu() && g_impl == AttentionImpl::fused) {
    if (Tq == 0) return torch::zeros({q.size(0), q.size(1), 0, v.size(3)}, q.options());
    const auto dt = q.scalar_type();
    // No gradient wanted (streaming, decoding): the kernel without an autograd node.
    const bool grad = torch::GradMode::is_enabled() &&
                      (q.requires_grad() || k.requires_grad() || v.requires_grad() ||
                       (q_sink.defined() && q_sink.requires_grad()));
    if (!grad && (dt == torch::kFloat || dt == torch::kDouble))
      return forward_pass(q, {k.to(dt)}, {v.to(dt)}, q_sink.defined() ? q_sink.to(dt) : torch::Tensor(), qp, kp, o.window,
                          o.n_sink, scale)
          .out;
    if (dt == torch::kFloat || dt == torch::kDouble)
      return FusedAttention::apply(q, k.to(dt), v.to(dt), q_sink.defined() ? q_sink.to(dt) : torch::empty({0}, q.options()),
                                   qp, kp, o.window, o.n_sink, scale);
    // Half precision activations: the kernel accumulates in float32.
    auto f = [&](const torch::Tensor& t) { return t.defined() ? t.to(torch::kFloat) : torch::empty({0}, q.options().dtype(torch::kFloat)); };
    return FusedAttention::apply(f(q), f(k), f(v), f(q_sink), qp, kp, o.window, o.n_sink, scale).to(dt);
  }
  if (k.size(1) != q.size(1)) {
    return attention(q, k.repeat_interleave(q.size(1) / k.size(1), 1), v.repeat_interleave(q.size(1) / v.size(1), 1),
                     q_pos, k_pos, o, q_sink);
  }
  const int64_t* kpp = kp.data_ptr<int64_t>();
  const int64_t* qpp = qp.data_ptr<int64_t>();
  // Number of sink keys at the front of k (positions < n_sink).
  int64_t n_sinkk = 0;
  if (o.window > 0 && o.n_sink > 0) n_sinkk = std::lower_bound(kpp, kpp + Tk, o.n_sink) - kpp;
  std::vector<torch::Tensor> outs;
  torch::Tensor bias_cache;
  std::array<int64_t, 3> cache_key{};
  for (int64_t i0 = 0; i0 < Tq; i0 += o.q_block) {
    int64_t n = std::min(o.q_block, Tq - i0);
    int64_t pmin = qpp[i0], pmax = qpp[i0 + n - 1];
    // Keys any query of the block can see: [lo, hi) plus the sinks in front.
    int64_t hi = std::upper_bound(kpp, kpp + Tk, pmax) - kpp;
    int64_t lo = o.window > 0 ? std::lower_bound(kpp, kpp + Tk, pmin - o.window + 1) - kpp : 0;
    lo = std::min(lo, hi);
    auto qb = q.narrow(2, i0, n);
    auto qsb = q_sink.defined() ? q_sink.narrow(2, i0, n) : torch::Tensor();
    torch::Tensor kb, vb, kpb;
    int64_t ns = 0;
    if (n_sinkk > 0 && lo > n_sinkk) {
      ns = n_sinkk;
      kb = torch::cat({k.narrow(2, 0, ns), k.narrow(2, lo, hi - lo)}, 2);
      vb = torch::cat({v.narrow(2, 0, ns), v.narrow(2, lo, hi - lo)}, 2);
      kpb = torch::cat({kp.narrow(0, 0, ns), kp.narrow(0, lo, hi - lo)});
    } else {
      if (n_sinkk > 0) lo = 0;  // the sinks are inside [lo, hi) already
      ns = std::min(n_sinkk, hi);
      kb = k.narrow(2, lo, hi - lo);
      vb = v.narrow(2, lo, hi - lo);
      kpb = kp.narrow(0, lo, hi - lo);
    }
    // With contiguous positions (no sinks split off) the mask depends only on the block's offset
    // and sizes: blocks of a long sliding-window call share one bias.
    const bool regular = ns == 0 && qpp[i0 + n - 1] - qpp[i0] == n - 1 && kpb.size(0) > 0 &&
                         kpp[lo + kpb.size(0) - 1] - kpp[lo] == kpb.size(0) - 1;
    const std::array<int64_t, 3> key{regular ? qpp[i0] - kpp[lo] : 0, n, kpb.size(0)};
    torch::Tensor bias;
    if (regular && bias_cache.defined() && key == cache_key) {
      bias = bias_cache;
    } else {
      bias = mask_bias(visible(qp.narrow(0, i0, n), kpb, o), q.scalar_type());
      if (regular) bias_cache = bias, cache_key = key;
    }
    if (qsb.defined() && ns > 0) {
      // Sink keys are scored with q_sink: one GEMM per key group, one softmax over both.
      auto b1 = bias.narrow(1, 0, ns), b2 = bias.narrow(1, ns, kb.size(2) - ns);
      int64_t B = q.size(0), H = q.size(1), d = q.size(3);
      auto s1 = torch::baddbmm(b1.unsqueeze(0).expand({B * H, n, ns}), qsb.reshape({B * H, n, d}),
                               kb.narrow(2, 0, ns).reshape({B * H, ns, d}).transpose(1, 2), 1.0, scale);
      auto s2 = torch::baddbmm(b2.unsqueeze(0).expand({B * H, n, kb.size(2) - ns}), qb.reshape({B * H, n, d}),
                               kb.narrow(2, ns, kb.size(2) - ns).reshape({B * H, -1, d}).transpose(1, 2), 1.0, scale);
      auto p = torch::softmax(torch::cat({s1, s2}, -1), -1);
      outs.push_back(torch::bmm(p, vb.reshape({B * H, kb.size(2), vb.size(3)})).view({B, H, n, vb.size(3)}));
    } else {
      outs.push_back(fused_attend(qb, kb, vb, bias, scale));
    }
  }
  return outs.size() == 1 ? outs[0] : torch::cat(outs, 2);
}

torch::Tensor attention_pieces(const torch::Tensor& q, const std::vector<torch::Tensor>& k,
                               const std::vector<torch::Tensor>& v, const torch::Tensor& q_pos,
                               const torch::Tensor& k_pos, const AttentionOptions& o, const torch::Tensor& q_sink) {
  LCX_CHECK(!k.empty() && k.size() == v.size(), "attention: ", k.size(), " key pieces, ", v.size(), " value pieces");
  std::vector<torch::Tensor> ks, vs;
  for (size_t i = 0; i < k.size(); ++i) {
    LCX_CHECK(k[i].dim() == 4 && v[i].dim() == 4 && k[i].size(2) == v[i].size(2),
              "attention: key/value piece ", i, " must be [B, H, T, dh] with as many keys as values");
    if (k[i].size(2) > 0) ks.push_back(k[i]), vs.push_back(v[i]);
  }
  if (ks.size() <= 1) return attention(q, ks.empty() ? k[0] : ks[0], ks.empty() ? v[0] : vs[0], q_pos, k_pos, o, q_sink);
  const auto dt = q.scalar_type();
  bool direct = q.device().is_cpu() && g_impl == AttentionImpl::fused && q.size(2) > 0 &&
                (dt == torch::kFloat || dt == torch::kDouble) &&
                ks.size() <= size_t(kernel::KeyValues<float>::kMaxPieces) &&
                !(torch::GradMode::is_enabled() && (q.requires_grad() || (q_sink.defined() && q_sink.requires_grad())));
  int64_t Tk = 0;
  for (size_t i = 0; i < ks.size(); ++i) {
    Tk += ks[i].size(2);
    direct = direct && ks[i].device().is_cpu() && ks[i].scalar_type() == dt && vs[i].scalar_type() == dt &&
             !(torch::GradMode::is_enabled() && (ks[i].requires_grad() || vs[i].requires_grad()));
    LCX_CHECK(ks[i].size(0) == ks[0].size(0) && ks[i].size(1) == ks[0].size(1) && ks[i].size(3) == ks[0].size(3) &&
                  vs[i].size(1) == ks[0].size(1) && vs[i].size(3) == vs[0].size(3),
              "attention: key/value pieces differ in batch, heads or head size");
  }
  if (!direct) return attention(q, torch::cat(ks, 2), torch::cat(vs, 2), q_pos, k_pos, o, q_sink);
  LCX_CHECK(q.dim() == 4 && q_pos.numel() == q.size(2) && k_pos.numel() == Tk, "attention: positions do not match T");
  LCX_CHECK(q.size(1) % ks[0].size(1) == 0, "attention: ", q.size(1), " query heads cannot share ", ks[0].size(1),
            " key/value heads");
  const double scale = o.scale > 0 ? o.scale : 1.0 / std::sqrt(double(q.size(3)));
  auto qp = q_pos.to(torch::kInt64).contiguous(), kp = k_pos.to(torch::kInt64).contiguous();
  return forward_pass(q, ks, vs, q_sink.defined() ? q_sink.to(dt) : torch::Tensor(), qp, kp, o.window, o.n_sink, scale)
      .out;
}

torch::Tensor attention_reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const torch::Tensor& q_pos, const torch::Tensor& k_pos,
                                  const AttentionOptions& o, const torch::Tensor& q_sink) {
  double scale = o.scale > 0 ? o.scale : 1.0 / std::sqrt(double(q.size(3)));
  auto kp = k_pos.to(torch::kInt64), qp = q_pos.to(torch::kInt64);
  if (k.size(1) != q.size(1))
    return attention_reference(q, k.repeat_interleave(q.size(1) / k.size(1), 1),
                               v.repeat_interleave(q.size(1) / v.size(1), 1), q_pos, k_pos, o, q_sink);
  auto s = torch::matmul(q, k.transpose(-1, -2)) * scale;  // unfused on purpose: the reference
  if (q_sink.defined() && o.n_sink > 0) {
    auto ss = torch::matmul(q_sink, k.transpose(-1, -2)) * scale;
    s = torch::where((kp < o.n_sink).view({1, 1, 1, -1}), ss, s);
  }
  return masked_attend(s, visible(qp, kp, o), v);
}

}  // namespace longctx
