#include "nn/timestep_norm.h"

#include "util/error.h"

namespace longctx {

TimestepNormImpl::TimestepNormImpl(int64_t dim, int64_t groups, double eps, int64_t prior_count)
    : dim_(dim), groups_(groups), prior_count_(prior_count), eps_(eps) {
  LCX_CHECK(groups > 0 && dim % groups == 0, "timestep_norm: ", dim, " features do not split into ", groups,
            " groups");
  LCX_CHECK(prior_count >= 0, "timestep_norm: prior_count must be >= 0, got ", prior_count);
  weight = register_parameter("weight", torch::zeros({dim}));
  bias = register_parameter("bias", torch::zeros({dim}));
  if (prior_count > 0) {
    prior_mean = register_parameter("prior_mean", torch::zeros({groups}));
    prior_logvar = register_parameter("prior_logvar", torch::zeros({groups}));
  }
}

StateSchema timestep_norm_schema(const std::string& prefix, int64_t groups) {
  return {StateField::count(prefix + "count", "TimestepNorm: steps seen"),
          StateField::tensor(prefix + "mean", {StateField::kBatch, groups}, "TimestepNorm: running mean per group"),
          StateField::tensor(prefix + "var", {StateField::kBatch, groups}, "TimestepNorm: running variance per group")};
}

torch::Tensor TimestepNormImpl::forward(const torch::Tensor& x, State& state, const std::string& prefix) {
  LCX_CHECK(x.dim() == 3 && x.size(2) == dim_, "timestep_norm: expected [B, T, ", dim_, "], got ", x.sizes());
  const int64_t B = x.size(0), T = x.size(1), G = groups_;
  const auto sdt = x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const std::string kc = prefix + "count", km = prefix + "mean", kv = prefix + "var";
  torch::Tensor mu0, var0;
  int64_t n0 = 0;
  if (state.has(km)) {
    n0 = state.counter(kc);
    mu0 = state.at(km);
    var0 = state.at(kv);
    LCX_CHECK(mu0.size(0) == B, "timestep_norm: state has batch ", mu0.size(0), ", input has ", B);
  } else if (prior_count_ > 0) {
    n0 = prior_count_;
    mu0 = prior_mean.to(sdt).unsqueeze(0).expand({B, G});
    var0 = torch::exp(prior_logvar.to(sdt)).unsqueeze(0).expand({B, G});
  } else {
    mu0 = torch::zeros({B, G}, x.options().dtype(sdt));
    var0 = torch::zeros({B, G}, x.options().dtype(sdt));
  }
  auto xg = x.to(sdt).view({B, T, G, dim_ / G});
  auto m = xg.mean(-1);                                   // [B,T,G] step means
  auto v = (xg - m.unsqueeze(-1)).pow(2).mean(-1);        // step population variances
  auto d = m - mu0.unsqueeze(1);
  auto n = (torch::arange(1, T + 1, x.options().dtype(sdt)) + double(n0)).view({1, T, 1});
  auto s1 = d.cumsum(1) / n;                              // mu_t - mu0
  auto mu = mu0.unsqueeze(1) + s1;
  auto var = ((v + d * d).cumsum(1) + double(n0) * var0.unsqueeze(1)) / n - s1 * s1;
  var = var.clamp_min(0);
  state.set_counter(kc, n0 + T);
  state.set(km, mu.select(1, T - 1).contiguous());
  state.set(kv, var.select(1, T - 1).contiguous());
  auto y = (xg - mu.unsqueeze(-1)) * torch::rsqrt(var.unsqueeze(-1) + eps_);
  return y.view({B, T, dim_}).to(x.scalar_type()) * (1 + weight) + bias;
}

}  // namespace longctx
