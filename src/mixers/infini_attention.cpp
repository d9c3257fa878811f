#include "mixers/infini_attention.h"

#include <cmath>
#include <limits>

#include "mixers/projections.h"
#include "nn/attention.h"

namespace longctx {

InfiniAttentionOptions InfiniAttentionOptions::parse(Fields& f, int64_t d_model, int64_t n_heads,
                                                     const RopeOptions& rope) {
  InfiniAttentionOptions o;
  o.d_model = d_model;
  o.n_heads = n_heads;
  o.segment = f.get<int64_t>("segment", o.segment);
  f.check(o.segment > 0, "segment", o.segment, "must be > 0");
  auto rule = f.get<std::string>("update", "delta");
  f.check(rule == "delta" || rule == "linear" || rule == "deltanet", "update", rule,
          "must be \"delta\", \"linear\" or \"deltanet\"");
  o.update = rule == "delta" ? Update::delta : rule == "linear" ? Update::linear : Update::deltanet;
  o.chunk = f.get<int64_t>("chunk", o.chunk);
  f.check(o.chunk > 0, "chunk", o.chunk, "must be > 0 (tokens per chunk of the DeltaNet update)");
  o.qk_conv = f.get<int64_t>("qk_conv", 0);
  f.check(o.qk_conv == 0 || o.qk_conv >= 2, "qk_conv", o.qk_conv, "must be 0 (off) or a kernel of >= 2 tokens");
  f.check(o.qk_conv <= 64, "qk_conv", o.qk_conv, "must be <= 64 (a short convolution)");
  f.check(o.qk_conv == 0 || o.update == Update::deltanet, "qk_conv", o.qk_conv, "needs \"update\": \"deltanet\"");
  o.decay = f.get<bool>("decay", false);
  f.check(!o.decay || o.update == Update::deltanet, "decay", o.decay, "needs \"update\": \"deltanet\"");
  o.decay_init = f.get<double>("decay_init", o.decay_init);
  f.check(o.decay_init > 0 && o.decay_init < 1, "decay_init", o.decay_init,
          "must be in (0, 1) (1 - alpha per token at the start)");
  o.detach_every = f.get<int64_t>("detach_every", 0);
  f.check(o.detach_every >= 0, "detach_every", o.detach_every, "must be >= 0 (0 = never)");
  o.gate_init = f.get<double>("gate_init", o.gate_init);
  f.check(std::isfinite(o.gate_init), "gate_init", o.gate_init, "must be finite");
  o.eps = f.get<double>("eps", o.eps);
  f.check(o.eps > 0 && o.eps < 1, "eps", o.eps, "must be in (0, 1)");
  o.read_memory = f.get<bool>("read_memory", true);
  auto read = f.get<std::string>("read", "segment");
  f.check(read == "segment" || read == "token", "read", read, "must be \"segment\" or \"token\"");
  f.check(read == "segment" || o.update == Update::deltanet, "read", read, "\"token\" needs \"update\": \"deltanet\"");
  o.token_read = read == "token";
  auto local = f.get<std::string>("local", "segment");
  f.check(local == "segment" || local == "window", "local", local, "must be \"segment\" or \"window\"");
  f.check(local == "segment" || o.token_read, "local", local,
          "\"window\" needs \"update\": \"deltanet\" and \"read\": \"token\"");
  o.window_local = local == "window";
  o.rope = rope;
  return o;
}

InfiniAttentionMixer::InfiniAttentionMixer(InfiniAttentionOptions o) : o_(o), rope_(o.rope) {
  dh_ = o_.d_model / o_.n_heads;
  register_qkvo(*this, o_.d_model, o_.d_model, o_.d_model, q_proj, k_proj, v_proj, o_proj);
  memory_gate = register_parameter("memory_gate", torch::full({o_.n_heads}, o_.gate_init));
  if (o_.update == InfiniAttentionOptions::Update::deltanet) {
    beta_proj = register_module("beta_proj", Linear(torch::nn::LinearOptions(o_.d_model, o_.n_heads)));
    torch::NoGradGuard ng;
    beta_proj->bias.zero_();  // write strength 0.5 at the start
  }
  if (o_.qk_conv > 0) qk_conv = register_parameter("qk_conv", torch::empty({2 * o_.d_model, o_.qk_conv}));
  if (o_.decay)
    decay_proj = register_module("decay_proj", Linear(torch::nn::LinearOptions(o_.d_model, o_.n_heads)));
  init_own_parameters();
}

void InfiniAttentionMixer::init_own_parameters() {
  torch::NoGradGuard ng;
  if (qk_conv.defined()) {
    qk_conv.zero_();
    qk_conv.select(1, o_.qk_conv - 1).fill_(1.0);  // the identity
  }
  if (decay_proj) {  // every head and token forgets decay_init at the start
    decay_proj->weight.zero_();
    decay_proj->bias.fill_(std::log(o_.decay_init));
  }
}

std::map<std::string, std::vector<double>> InfiniAttentionMixer::diagnostics(const State&) const {
  auto g = torch::sigmoid(memory_gate.detach().to(torch::kCPU, torch::kFloat64)).contiguous();
  return {{"gate", std::vector<double>(g.data_ptr<double>(), g.data_ptr<double>() + g.numel())}};
}

StateSchema InfiniAttentionMixer::state_schema() const {
  const int64_t B = StateField::kBatch, any = StateField::kAny, H = o_.n_heads, d = dh_, N = o_.segment;
  StateSchema s = {StateField::count("pos", "tokens seen"),
                   StateField::count("fill", "tokens of the current segment (pos mod segment)"),
                   StateField::tensor("M", {B, H, d, d}, "the compressive memory"),
                   StateField::tensor("k", {B, H, any, d}, o_.window_local ? "the window's keys" : "the segment's keys", N),
                   StateField::tensor("v", {B, H, any, d}, o_.window_local ? "the window's values" : "the segment's values", N)};
  if (o_.update != InfiniAttentionOptions::Update::deltanet) s.push_back(StateField::tensor("z", {B, H, d}, "the normaliser"));
  if (!(o_.update == InfiniAttentionOptions::Update::deltanet && o_.token_read)) {
    s.push_back(StateField::tensor("sk", {B, H, any, d}, "the segment's memory keys (features)", N));
    if (o_.update == InfiniAttentionOptions::Update::deltanet)
      s.push_back(StateField::tensor("b", {B, H, any, 1}, "the segment's write strengths", N));
    if (o_.decay) s.push_back(StateField::tensor("g", {B, H, any, 1}, "the segment's log decays", N));
  }
  if (o_.qk_conv > 0)
    s.push_back(StateField::tensor("qk_hist", {B, o_.qk_conv - 1, 2 * o_.d_model},
                                   "the last qk_conv - 1 rows of the memory's queries and keys before the convolution"));
  return s;
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

std::pair<torch::Tensor, torch::Tensor> causal_short_conv(const torch::Tensor& x, const torch::Tensor& hist,
                                                          const torch::Tensor& w) {
  const int64_t T = x.size(1), K = w.size(1);
  LCX_CHECK(hist.dim() == 3 && hist.size(1) == K - 1 && hist.size(2) == x.size(2) && w.size(0) == x.size(2),
            "causal_short_conv: history ", hist.sizes(), " and taps ", w.sizes(), " do not fit input ", x.sizes());
  auto ext = torch::cat({hist.to(x.scalar_type()), x}, 1);  // [B, K-1+T, C]
  auto wt = w.to(x.scalar_type());
  auto y = ext.narrow(1, K - 1, T) * wt.select(1, K - 1);
  for (int64_t j = 0; j + 1 < K; ++j) y = y + ext.narrow(1, j, T) * wt.select(1, j);
  return {y, ext.narrow(1, T, K - 1)};
}

torch::Tensor deltanet_feature(const torch::Tensor& x) {
  namespace F = torch::nn::functional;
  return F::normalize(torch::silu(x), F::NormalizeFuncOptions().p(2).dim(-1).eps(1e-6));
}

namespace {
// The chunked delta rule; with q defined, also the causal outputs o_t = q_t^T M_t. Everything that
// does not depend on M (the triangular systems, the within-chunk scores) is computed for all
// chunks at once; the loop over chunks holds two or three small products each. The tail is padded
// with zero keys, values and strengths, which write nothing, and its outputs are dropped.
torch::Tensor deltanet_chunks(torch::Tensor& M, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const torch::Tensor& beta, int64_t chunk, const torch::Tensor& log_alpha) {
  LCX_CHECK(chunk > 0, "deltanet: chunk ", chunk, " must be > 0");
  const int64_t B = k.size(0), H = k.size(1), T = k.size(2), dk = k.size(3), dv = v.size(3);
  if (T == 0) return q.defined() ? torch::zeros({B, H, 0, dv}, v.options()) : torch::Tensor();
  const int64_t C = std::min(chunk, T), n = (T + C - 1) / C, pad = n * C - T;
  auto blocks = [&](const torch::Tensor& x) {  // [B,H,T,e] -> [B,H,n,C,e]
    auto p = pad ? torch::constant_pad_nd(x, {0, 0, 0, pad}) : x;
    return p.reshape({B, H, n, C, x.size(3)});
  };
  auto kc = blocks(k), vc = blocks(v), bc = blocks(beta.unsqueeze(-1));
  auto bk = bc * kc;
  // With a decay: G_i = sum of log alpha over the chunk up to i, gamma_i = exp(G_i), and every
  // pair i >= j carries exp(G_i - G_j), the decay from token j's write to token i. Unrolled,
  // M_i = gamma_i M_0 + sum_{j<=i} exp(G_i - G_j) k_j u_j^T with u_i = b_i (v_i - alpha_i M_{i-1}^T k_i),
  // so u solves (I + strictLower(diag(b) K K^T o D)) u = diag(b) (V - diag(gamma) K M_0).
  torch::Tensor D, gam, tail;  // D_ij = exp(G_i - G_j) on and below the diagonal; gamma [.,C,1]; exp(G_C - G_j)
  if (log_alpha.defined()) {
    auto G = blocks(log_alpha.unsqueeze(-1)).cumsum(3);  // [B,H,n,C,1]; padding adds log 1 = 0
    D = (G - G.transpose(-2, -1)).clamp_max(0).exp().tril(0);
    gam = G.exp();
    tail = (G.narrow(3, C - 1, 1) - G).exp();
  }
  // A_ij = b_i k_i.k_j below the diagonal; the solve takes I + A (unit diagonal implied).
  auto A = torch::matmul(bk, kc.transpose(-2, -1)).tril(-1);
  if (D.defined()) A = A * D;
  auto X = torch::linalg_solve_triangular(A, torch::cat({D.defined() ? bk * gam : bk, bc * vc}, -1), /*upper=*/false,
                                          /*left=*/true, /*unitriangular=*/true);
  auto W = X.narrow(-1, 0, dk), U = X.narrow(-1, dk, dv);
  auto kt = (D.defined() ? kc * tail : kc).transpose(-2, -1);
  torch::Tensor WQ, QK;  // with outputs: [W; q] per chunk (one product with M), the causal q.k scores
  if (q.defined()) {
    auto qc = blocks(q);
    WQ = torch::cat({W, D.defined() ? qc * gam : qc}, -2);
    QK = torch::matmul(qc, kc.transpose(-2, -1)).tril(0);
    if (D.defined()) QK = QK * D;
  }
  torch::Tensor chunk_decay;  // gamma at each chunk's end: M_0's share of the next M
  if (D.defined()) chunk_decay = gam.narrow(3, C - 1, 1);  // [B,H,n,1,1]
  std::vector<torch::Tensor> outs;
  outs.reserve(q.defined() ? n : 0);
  for (int64_t i = 0; i < n; ++i) {
    torch::Tensor Up;  // the values each token of the chunk actually writes
    if (q.defined()) {
      auto P = torch::matmul(WQ.select(2, i), M);
      Up = U.select(2, i) - P.narrow(-2, 0, C);
      outs.push_back(P.narrow(-2, C, C) + torch::matmul(QK.select(2, i), Up));
    } else {
      Up = U.select(2, i) - torch::matmul(W.select(2, i), M);
    }
    M = (chunk_decay.defined() ? M * chunk_decay.select(2, i) : M) + torch::matmul(kt.select(2, i), Up);
  }
  if (outs.empty()) return {};
  auto O = outs.size() == 1 ? outs[0] : torch::cat(outs, 2);
  return pad ? O.narrow(2, 0, T) : O;
}
}  // namespace

torch::Tensor deltanet_memory_update(const torch::Tensor& M0, const torch::Tensor& k, const torch::Tensor& v,
                                     const torch::Tensor& beta, int64_t chunk, const torch::Tensor& log_alpha) {
  auto M = M0;
  deltanet_chunks(M, {}, k, v, beta, chunk, log_alpha);
  return M;
}

std::pair<torch::Tensor, torch::Tensor> deltanet_scan(const torch::Tensor& M0, const torch::Tensor& q,
                                                      const torch::Tensor& k, const torch::Tensor& v,
                                                      const torch::Tensor& beta, int64_t chunk,
                                                      const torch::Tensor& log_alpha) {
  auto M = M0;
  auto O = deltanet_chunks(M, q, k, v, beta, chunk, log_alpha);
  return {O, M};
}

torch::Tensor InfiniAttentionMixer::forward(const torch::Tensor& x, State& state, StepContext& ctx) {
  const int64_t B = x.size(0), T = x.size(1), H = o_.n_heads, N = o_.segment, d = dh_;
  const auto dt = x.scalar_type();
  const auto mdt = dt == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;  // memory dtype
  const int64_t pos0 = state.counter("pos");
  int64_t fill = state.counter("fill");
  LCX_CHECK(fill == pos0 % N, "infini_attention: state holds ", fill, " tokens of a partial segment at position ",
            pos0, " (segment ", N, ")");
  auto pos = torch::arange(pos0, pos0 + T, torch::kInt64);

  // One GEMM for q, k and v.
  auto qkv = project_qkv(x, q_proj, k_proj, v_proj).view({B, T, 3 * H, d});
  auto parts = qkv.split_with_sizes({2 * H, H}, 2);
  auto rot = rope_.apply(parts[0], pos, /*time_dim=*/1).split_with_sizes({H, H}, 2);
  auto qr = rot[0].transpose(1, 2), kr = rot[1].transpose(1, 2);  // [B,H,T,d], local attention
  const bool dnet = o_.update == InfiniAttentionOptions::Update::deltanet;
  auto mem_qk = parts[0];  // memory: before RoPE
  if (o_.qk_conv > 0) {
    const int64_t C = 2 * H * d;
    auto hist = state.has("qk_hist") ? state.at("qk_hist") : torch::zeros({B, o_.qk_conv - 1, C}, x.options());
    LCX_CHECK(hist.size(0) == B, "infini_attention: state has batch ", hist.size(0), ", input has ", B);
    auto r = causal_short_conv(mem_qk.reshape({B, T, C}), hist, qk_conv);
    mem_qk = r.first.view({B, T, 2 * H, d});
    state.set("qk_hist", r.second.contiguous());
  }
  auto raw = mem_qk.split_with_sizes({H, H}, 2);
  torch::Tensor sq, sk, wb, la;  // features; deltanet's write strengths [B,H,T,1]; log decays [B,H,T]
  if (dnet) {
    sq = deltanet_feature(raw[0].to(mdt)).transpose(1, 2);
    sk = deltanet_feature(raw[1].to(mdt)).transpose(1, 2);
    wb = torch::sigmoid(beta_proj(x).to(mdt)).transpose(1, 2).unsqueeze(-1);
    if (o_.decay) la = -torch::exp(decay_proj(x).to(mdt).clamp_max(20.0)).transpose(1, 2);  // log alpha
    if (ctx.record) {
      ctx.record->push_back({{"beta", wb.squeeze(-1).detach()}});
      if (la.defined()) ctx.record->back()["log_alpha"] = la.detach();
    }
  } else {
    sq = (torch::elu(raw[0].to(mdt)) + 1).transpose(1, 2);
    sk = (torch::elu(raw[1].to(mdt)) + 1).transpose(1, 2);
  }
  auto v = parts[1].transpose(1, 2);

  if (!state.has("M")) {
    state.set("M", torch::zeros({B, H, d, d}, x.options().dtype(mdt)));
    if (!dnet) state.set("z", torch::zeros({B, H, d}, x.options().dtype(mdt)));
  }
  auto M = state.at("M");
  auto z = dnet ? torch::Tensor() : state.at("z");
  LCX_CHECK(M.size(0) == B, "infini_attention: state has batch ", M.size(0), ", input has ", B);

  const bool graph = torch::GradMode::is_enabled();
  const double scale = 1.0 / std::sqrt(double(d));
  auto gate = torch::sigmoid(memory_gate).to(dt).view({1, H, 1, 1});
  if (o_.window_local) {
    // Local path: the last N tokens (KVCache bounded to N - 1 between calls), any chunking.
    const int64_t cached = KVCache::length(state, "");
    auto kv = KVCache::append(state, "", kr, v);
    AttentionOptions ao;
    ao.window = N;
    ao.scale = scale;
    ao.q_block = std::max<int64_t>(16, std::min<int64_t>(64, N / 4));  // a block's keys: N + q_block, not 2N
    auto a_dot = attention(qr, kv.first, kv.second, pos, torch::arange(pos0 - cached, pos0 + T, torch::kInt64), ao);
    // The memory token by token; detach_every k cuts the graph at every multiple of k * N tokens.
    const int64_t period = graph && o_.detach_every > 0 ? N * o_.detach_every : 0;
    std::vector<torch::Tensor> reads;
    auto vm = v.to(mdt);
    auto bm = wb.squeeze(-1);
    for (int64_t t = 0; t < T;) {
      const int64_t len = period ? std::min(T - t, period - (pos0 + t) % period) : T - t;
      auto r = deltanet_scan(M, sq.narrow(2, t, len), sk.narrow(2, t, len), vm.narrow(2, t, len), bm.narrow(2, t, len),
                             o_.chunk, la.defined() ? la.narrow(2, t, len) : torch::Tensor());
      reads.push_back(r.first);
      M = r.second;
      if (period && (pos0 + t + len) % period == 0) M = M.detach();
      t += len;
    }
    auto a_mem = (reads.size() == 1 ? reads[0] : torch::cat(reads, 2)).to(dt);
    if (ctx.record) ctx.record->back()["read"] = a_mem.detach(), ctx.record->back()["local"] = a_dot.detach();
    auto y = o_.read_memory ? gate * a_mem + (1 - gate) * a_dot : (1 - gate) * a_dot;
    KVCache::keep_last(state, "", std::min<int64_t>(N - 1, pos0 + T));
    state.set("M", M);
    state.set_counter("fill", (pos0 + T) % N);
    state.set_counter("pos", pos0 + T);
    return o_proj(y.transpose(1, 2).reshape({B, T, H * d}));
  }

  // The partial segment (SegmentBuffer: fixed buffers without autograd, exact tensors with it).
  const bool token_read = dnet && o_.token_read;  // memory written as tokens arrive: no features held
  std::vector<std::string> names = {"k", "v"};
  std::vector<torch::Tensor> per_token = {kr, v};
  if (!token_read) names.push_back("sk"), per_token.push_back(sk);
  if (dnet && !token_read) names.push_back("b"), per_token.push_back(wb);
  if (la.defined() && !token_read) names.push_back("g"), per_token.push_back(la.unsqueeze(-1));
  SegmentBuffer held(state, names, N);
  held.reserve(per_token, fill);

  std::vector<torch::Tensor> outs, recorded, recorded_local;  // the memory's and local reads, when asked for
  int64_t updates = pos0 / N;
  for (int64_t t = 0; t < T;) {
    const int64_t len = std::min(N - fill, T - t);
    std::vector<torch::Tensor> pieces;
    for (auto& p : per_token) pieces.push_back(p.narrow(2, t, len));
    auto seg = held.extend(fill, pieces);
    // Local causal attention: the query at segment offset fill+i sees keys 0..fill+i.
    AttentionOptions ao;
    ao.scale = scale;
    auto a_dot = attention(qr.narrow(2, t, len), seg[0], seg[1], torch::arange(fill, fill + len, torch::kInt64),
                           torch::arange(0, fill + len, torch::kInt64), ao);
    torch::Tensor a_mem;
    if (token_read) {  // each token reads after its own write; M follows the tokens
      auto r = deltanet_scan(M, sq.narrow(2, t, len), sk.narrow(2, t, len), v.narrow(2, t, len).to(mdt),
                             wb.narrow(2, t, len).squeeze(-1), o_.chunk,
                             la.defined() ? la.narrow(2, t, len) : torch::Tensor());
      a_mem = r.first, M = r.second;
    } else if (o_.read_memory) {
      a_mem = dnet ? torch::matmul(sq.narrow(2, t, len), M) : infini_memory_read(sq.narrow(2, t, len), M, z, o_.eps);
    }
    if (o_.read_memory) {
      if (ctx.record && dnet) recorded.push_back(a_mem.detach()), recorded_local.push_back(a_dot.detach());
      outs.push_back(gate * a_mem.to(dt) + (1 - gate) * a_dot);
    } else {
      outs.push_back((1 - gate) * a_dot);
    }
    if (fill + len == N) {  // segment complete: fold it into memory
      if (token_read) {
        // already written token by token
      } else if (dnet) M = deltanet_memory_update(M, seg[2], seg[1].to(mdt), seg[3].squeeze(-1), o_.chunk,
                                                  la.defined() ? seg[4].squeeze(-1) : torch::Tensor());
      else infini_memory_update(M, z, seg[2], seg[1].to(mdt), o_.update == InfiniAttentionOptions::Update::delta, o_.eps);
      ++updates;
      if (graph && o_.detach_every > 0 && updates % o_.detach_every == 0) {
        M = M.detach();
        if (z.defined()) z = z.detach();
      }
    }
    fill = held.advance(fill, len, seg);
    t += len;
  }
  if (!recorded.empty()) {
    ctx.record->back()["read"] = torch::cat(recorded, 2);
    ctx.record->back()["local"] = torch::cat(recorded_local, 2);
  }
  state.set("M", M);
  if (z.defined()) state.set("z", z);
  state.set_counter("fill", fill);
  state.set_counter("pos", pos0 + T);
  auto y = (outs.size() == 1 ? outs[0] : torch::cat(outs, 2)).transpose(1, 2).reshape({B, T, H * d});
  return o_proj(y);
}

Mechanism infini_mechanism() {
  auto options = [](const LayerSpec& s) {
    return parse_mixer_fields(s, [&](Fields& f) { return InfiniAttentionOptions::parse(f, s.d_model, s.n_heads, s.rope()); });
  };
  Mechanism m;
  m.type = "infini_attention";
  m.validate = [options](const LayerSpec& s) { options(s); };
  m.make_mixer = [options](const LayerSpec& s, int64_t) { return std::make_shared<InfiniAttentionMixer>(options(s)); };
  return m;
}

}  // namespace longctx
