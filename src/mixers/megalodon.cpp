#include "mixers/megalodon.h"

#include <cmath>

#include "nn/attention.h"

namespace longctx {

namespace {

constexpr double kTwoPi = 6.283185307179586;

// q^j for j = 0..L-1 as real and imaginary parts [D, N, L]. The phase j * arg(q) is reduced
// modulo 2 pi in float64 before cos/sin (float32 would lose ~1e-3 rad at j = 4K); gradients
// still flow through j * arg(q).
std::pair<torch::Tensor, torch::Tensor> q_powers(const CemaCoeffs& c, int64_t L) {
  auto j = torch::arange(L, c.log_mag.options());
  auto ang = c.angle.unsqueeze(-1) * j;
  if (c.angle.scalar_type() != torch::kFloat64) {
    auto exact = torch::remainder(c.angle.detach().to(torch::kFloat64).unsqueeze(-1) * j.to(torch::kFloat64), kTwoPi)
                     .to(ang.scalar_type());
    ang = exact + (ang - ang.detach());
  }
  auto mag = torch::exp(c.log_mag.unsqueeze(-1) * j);
  return {mag * torch::cos(ang), mag * torch::sin(ang)};
}

// [B, D, K] x [D, K, M] -> [B, D, M], a batched matmul over channels.
torch::Tensor per_channel_mm(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::bmm(a.permute({1, 0, 2}), b).permute({1, 0, 2});
}

int64_t next_pow2(int64_t n) {
  int64_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

}  // namespace

torch::Tensor cema_fft(const torch::Tensor& x, const CemaCoeffs& c, const torch::Tensor& h0_re,
                       const torch::Tensor& h0_im, torch::Tensor* h_re, torch::Tensor* h_im) {
  const int64_t L = x.size(2);
  auto [pr, pi] = q_powers(c, L);  // q^j, j = 0..L-1
  // Kernel k_j = Re(sum_n eta_n p_n q_n^j), [D, L].
  auto kernel = ((c.p * c.eta_re).unsqueeze(-1) * pr - (c.p * c.eta_im).unsqueeze(-1) * pi).sum(1);
  const int64_t F = 2 * next_pow2(L);
  auto y = torch::fft::irfft(torch::fft::rfft(x, F, -1) * torch::fft::rfft(kernel, F, -1), F, -1).narrow(-1, 0, L);
  const bool has_state = h0_re.defined();
  torch::Tensor q1r, q1i;  // q^{j+1}, j = 0..L-1
  if (has_state || h_re) {
    auto qr = torch::exp(c.log_mag) * torch::cos(c.angle), qi = torch::exp(c.log_mag) * torch::sin(c.angle);
    q1r = pr * qr.unsqueeze(-1) - pi * qi.unsqueeze(-1);
    q1i = pr * qi.unsqueeze(-1) + pi * qr.unsqueeze(-1);
  }
  if (has_state) {
    // Re(sum_n eta_n q_n^{t+1} h0_n)
    auto ar = c.eta_re.unsqueeze(-1) * q1r - c.eta_im.unsqueeze(-1) * q1i;
    auto ai = c.eta_re.unsqueeze(-1) * q1i + c.eta_im.unsqueeze(-1) * q1r;
    y = y + per_channel_mm(h0_re, ar) - per_channel_mm(h0_im, ai);
  }
  if (h_re) {
    // h_L = p sum_m x_{L-1-m} q^m + q^L h0
    auto xf = x.flip(-1);
    auto sr = per_channel_mm(xf, pr.transpose(1, 2)), si = per_channel_mm(xf, pi.transpose(1, 2));
    auto hr = c.p * sr, hi = c.p * si;
    if (has_state) {
      auto qlr = q1r.select(-1, L - 1), qli = q1i.select(-1, L - 1);
      hr = hr + qlr * h0_re - qli * h0_im;
      hi = hi + qlr * h0_im + qli * h0_re;
    }
    *h_re = hr;
    *h_im = hi;
  }
  return y;
}

torch::Tensor cema_recurrence(const torch::Tensor& x, const CemaCoeffs& c, const torch::Tensor& h0_re,
                              const torch::Tensor& h0_im, torch::Tensor* h_re, torch::Tensor* h_im) {
  const int64_t B = x.size(0), D = x.size(1), L = x.size(2), N = c.p.size(1);
  auto qr = torch::exp(c.log_mag) * torch::cos(c.angle), qi = torch::exp(c.log_mag) * torch::sin(c.angle);
  auto hr = h0_re.defined() ? h0_re : torch::zeros({B, D, N}, x.options());
  auto hi = h0_im.defined() ? h0_im : torch::zeros({B, D, N}, x.options());
  std::vector<torch::Tensor> ys;
  ys.reserve(L);
  for (int64_t t = 0; t < L; ++t) {
    auto xt = x.select(2, t).unsqueeze(-1);
    auto nr = c.p * xt + qr * hr - qi * hi;
    auto ni = qr * hi + qi * hr;
    hr = nr;
    hi = ni;
    ys.push_back((c.eta_re * hr - c.eta_im * hi).sum(-1));
  }
  if (h_re) *h_re = hr;
  if (h_im) *h_im = hi;
  return torch::stack(ys, 2);
}

CemaImpl::CemaImpl(int64_t dim, int64_t ndim) : dim_(dim), ndim_(ndim) {
  alpha = register_parameter("alpha", torch::zeros({dim, ndim}));
  delta = register_parameter("delta", torch::zeros({dim, ndim}));
  theta = register_parameter("theta", torch::zeros({dim}));
  gamma = register_parameter("gamma", torch::zeros({dim, ndim, 2}));
  omega = register_parameter("omega", torch::zeros({dim}));
  reset_parameters();
}

void CemaImpl::reset_parameters() {
  torch::NoGradGuard ng;
  alpha.normal_(0.0, 0.2);
  delta.normal_(0.0, 0.2);
  // theta: logit of exp(-k ln D / D), k = 1..D, randomly permuted over channels.
  auto k = torch::arange(1, dim_ + 1, torch::kFloat64);
  auto f = torch::exp(-k * std::log(double(dim_)) / double(dim_));
  auto logit = torch::log(f / (1 - f)).index_select(0, torch::randperm(dim_, torch::kInt64));
  theta.copy_(logit.to(theta.scalar_type()));
  gamma.normal_(0.0, 1.0);
  gamma.select(-1, 1).zero_();
  // omega ~ N(0, 0.25) truncated to [-1, 1] (resampled until inside).
  auto w = torch::randn({dim_}, torch::kFloat64) * 0.25;
  for (auto out = w.abs() > 1; out.any().item<bool>(); out = w.abs() > 1)
    w = torch::where(out, torch::randn({dim_}, torch::kFloat64) * 0.25, w);
  omega.copy_(w.to(omega.scalar_type()));
}

CemaCoeffs CemaImpl::coeffs(torch::Dtype dt) const {
  auto a = torch::sigmoid(alpha.to(dt)), d = torch::sigmoid(delta.to(dt));
  auto n = torch::arange(1, ndim_ + 1, a.options()).view({1, ndim_});
  const double scale = 1.0 / std::sqrt(double(ndim_));
  return {a, torch::log1p(-a * d), n * torch::sigmoid(theta.to(dt)).view({dim_, 1}) * (kTwoPi / ndim_),
          gamma.to(dt).select(-1, 0) * scale, gamma.to(dt).select(-1, 1) * scale};
}

torch::Tensor CemaImpl::forward(const torch::Tensor& x, State& state, bool hand_on) {
  const auto dt = x.scalar_type();
  const auto cdt = dt == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  auto c = coeffs(cdt);
  auto xs = x.to(cdt).transpose(1, 2).contiguous();  // [B, D, T]
  auto h0r = state.get("cema_re"), h0i = state.get("cema_im");
  if (h0r.defined())
    LCX_CHECK(h0r.size(0) == x.size(0), "cema: state has batch ", h0r.size(0), ", input has ", x.size(0));
  torch::Tensor hr, hi;
  auto* pr = hand_on ? &hr : nullptr;
  auto* pi = hand_on ? &hi : nullptr;
  auto y = x.size(1) <= recurrence_max ? cema_recurrence(xs, c, h0r, h0i, pr, pi) : cema_fft(xs, c, h0r, h0i, pr, pi);
  if (hand_on) {
    state.set("cema_re", hr);
    state.set("cema_im", hi);
  }
  y = y + omega.to(cdt).view({1, dim_, 1}) * xs;
  return y.transpose(1, 2).to(dt);
}

MegalodonOptions MegalodonOptions::parse(Fields& f, int64_t d_model, int64_t n_heads, double eps) {
  MegalodonOptions o;
  o.d_model = d_model;
  o.n_heads = n_heads;
  o.eps = eps;
  o.z_dim = f.get<int64_t>("z_dim", o.z_dim);
  f.check(o.z_dim > 0 && o.z_dim % n_heads == 0 && (o.z_dim / n_heads) % 2 == 0, "z_dim", o.z_dim,
          "must be a positive multiple of 2 x n_heads (" + std::to_string(2 * n_heads) + ")");
  o.v_dim = f.get<int64_t>("v_dim", o.v_dim);
  f.check(o.v_dim > 0 && o.v_dim % n_heads == 0, "v_dim", o.v_dim,
          "must be a positive multiple of n_heads (" + std::to_string(n_heads) + ")");
  o.ndim = f.get<int64_t>("ndim", o.ndim);
  f.check(o.ndim > 0, "ndim", o.ndim, "must be > 0");
  o.chunk = f.get<int64_t>("chunk", o.chunk);
  f.check(o.chunk > 0, "chunk", o.chunk, "must be > 0");
  o.groups = f.get<int64_t>("groups", o.groups);
  f.check(o.groups > 0 && d_model % o.groups == 0, "groups", o.groups,
          "must divide d_model (" + std::to_string(d_model) + ")");
  o.rope_base = f.get<double>("rope_base", o.rope_base);
  f.check(o.rope_base > 1, "rope_base", o.rope_base, "must be > 1");
  return o;
}

MegalodonMixer::MegalodonMixer(MegalodonOptions o) : o_(o), rope_(RopeOptions{o.z_dim / o.n_heads, o.rope_base, true}) {
  const int64_t D = o_.d_model;
  auto lin = [](int64_t i, int64_t j, bool bias) { return Linear(torch::nn::LinearOptions(i, j).bias(bias)); };
  timenorm = register_module("timenorm", TimestepNorm(D, o_.groups, o_.eps));
  cema = register_module("cema", Cema(D, o_.ndim));
  rmsnorm = register_module("rmsnorm", RMSNorm(D, o_.eps, /*unit_offset=*/true));
  wz = register_module("wz", lin(D, o_.z_dim, true));
  wv = register_module("wv", lin(D, o_.v_dim, true));
  wr = register_module("wr", lin(D, o_.v_dim, true));
  wh1 = register_module("wh1", lin(D, D, true));
  wh2 = register_module("wh2", lin(o_.v_dim, D, false));
  gamma = register_parameter("gamma", torch::zeros({2, o_.z_dim}));
  beta = register_parameter("beta", torch::zeros({2, o_.z_dim}));
}

void MegalodonMixer::reset_parameters() {
  torch::NoGradGuard ng;
  // Linear layers: PyTorch's default (kaiming with a = sqrt 5), biases zero; CEMA its own.
  for (auto* l : {&wz, &wv, &wr, &wh1, &wh2}) {
    (*l)->reset_parameters();
    if ((*l)->bias.defined()) (*l)->bias.zero_();
  }
  cema->reset_parameters();
  gamma.zero_();
  beta.zero_();
}

StateSchema MegalodonMixer::state_schema() const {
  const int64_t B = StateField::kBatch, any = StateField::kAny, H = o_.n_heads, C = o_.chunk;
  auto s = timestep_norm_schema("tsn_", o_.groups);
  for (auto& f : StateSchema{
           StateField::count("pos", "tokens seen"),
           StateField::tensor("cema_re", {B, o_.d_model, o_.ndim}, "CEMA's hidden state, real part"),
           StateField::tensor("cema_im", {B, o_.d_model, o_.ndim}, "CEMA's hidden state, imaginary part"),
           StateField::tensor("k", {B, H, any, o_.z_dim / H}, "the chunk's keys", C),
           StateField::tensor("v", {B, H, any, o_.v_dim / H}, "the chunk's values", C)})
    s.push_back(f);
  return s;
}

torch::Tensor MegalodonMixer::chunk_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                              State& state) {
  const int64_t B = q.size(0), T = q.size(1), H = o_.n_heads, C = o_.chunk;
  const int64_t dz = o_.z_dim / H, dv = o_.v_dim / H;
  const int64_t pos0 = state.counter("pos");
  int64_t fill = pos0 % C;
  auto q4 = q.reshape({B, T, H, dz}).transpose(1, 2), k4 = k.reshape({B, T, H, dz}).transpose(1, 2);
  auto v4 = v.reshape({B, T, H, dv}).transpose(1, 2);
  AttentionOptions ao;
  ao.scale = 1.0;
  SegmentBuffer held(state, {"k", "v"}, C);
  held.reserve({k4, v4}, fill);
  torch::Tensor out;
  if (fill == 0 && T % C == 0) {
    // Whole chunks: one batched attention over [B * chunks, H, C, d].
    const int64_t nc = T / C;
    auto split = [&](const torch::Tensor& t, int64_t d) {
      return t.reshape({B, H, nc, C, d}).permute({0, 2, 1, 3, 4}).reshape({B * nc, H, C, d});
    };
    auto pos = torch::arange(C, torch::kInt64);
    auto o = attention(rope_.apply(split(q4, dz), pos), rope_.apply(split(k4, dz), pos), split(v4, dv), pos, pos, ao);
    out = o.reshape({B, nc, H, C, dv}).permute({0, 2, 1, 3, 4}).reshape({B, H, T, dv});
    held.clear_if_graph();
  } else {
    std::vector<torch::Tensor> outs;
    for (int64_t t = 0; t < T;) {
      const int64_t len = std::min(C - fill, T - t);
      auto pos = torch::arange(fill, fill + len, torch::kInt64);
      auto qp = rope_.apply(q4.narrow(2, t, len), pos);
      auto seg = held.extend(fill, {rope_.apply(k4.narrow(2, t, len), pos), v4.narrow(2, t, len)});
      outs.push_back(attention(qp, seg[0], seg[1], pos, torch::arange(fill + len, torch::kInt64), ao));
      fill = held.advance(fill, len, seg);
      t += len;
    }
    out = outs.size() == 1 ? outs[0] : torch::cat(outs, 2);
  }
  state.set_counter("pos", pos0 + T);
  return out.transpose(1, 2).reshape({B, T, H * dv});
}

torch::Tensor MegalodonMixer::forward(const torch::Tensor& x, State& state, StepContext& ctx) {
  const int64_t B = x.size(0), T = x.size(1), H = o_.n_heads, dz = o_.z_dim / H;
  auto xt = timenorm(x, state, "tsn_");
  auto mx = rmsnorm(cema(xt, state, ctx.hand_on));
  auto z = wz(mx).view({B, T, H, dz});
  z = (z * torch::rsqrt(z.pow(2).mean(-1, true) + o_.eps)).view({B, T, o_.z_dim});
  auto qk = z.unsqueeze(2) * ((gamma + 1) / std::sqrt(double(dz))) + beta;  // [B, T, 2, Z]
  auto v = torch::silu(wv(xt));
  auto r = torch::silu(wr(mx));
  auto attn = chunk_attention(qk.select(2, 0), qk.select(2, 1), v, state);
  return wh1(mx) + wh2(attn * r);
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

Mechanism megalodon_mechanism() {
  auto options = [](const LayerSpec& s) {
    return parse_mixer_fields(s, [&](Fields& f) { return MegalodonOptions::parse(f, s.d_model, s.n_heads, s.norm_eps); });
  };
  Mechanism m;
  m.type = "megalodon";
  m.validate = [options](const LayerSpec& s) { options(s); };
  m.make_block = [options](const LayerSpec& s, int64_t) -> std::shared_ptr<Block> {
    return std::make_shared<MegalodonBlock>(std::make_shared<MegalodonMixer>(options(s)), s.d_model, s.d_ff, s.norm_eps);
  };
  m.final_norm_groups = [options](const LayerSpec& s) { return options(s).groups; };
  return m;
}

}  // namespace longctx
