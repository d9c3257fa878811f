// TimestepNorm (MEGALODON, arXiv 2404.08801): a group norm whose statistics are cumulative over
// time. For each group g of D/G features, the mean and variance at step t cover every element
// of the group in steps 0..t (the current step included, population variance), so the norm is
// causal and streams: the state is the running (count, mean, var) per group.
//
//   y_t = (x_t - mu_t) / sqrt(var_t + eps) * (1 + w) + b        w, b per feature, w init 0
//
// Each step contributes its group mean m_s and variance v_s with equal weight (every step has
// D/G elements). With n0 steps already seen, mean mu0 and variance var0:
//   n_t   = n0 + t
//   mu_t  = mu0 + sum_{s<=t} (m_s - mu0) / n_t
//   var_t = (n0 var0 + sum_{s<=t} (v_s + (m_s - mu0)^2)) / n_t - (mu_t - mu0)^2
// which is the Welford/Chan merge of the chunk into the running statistics, written so one call
// handles a whole chunk. Statistics are computed and kept in float32 (float64 under float64).
// Optional prior (prior_count > 0): the statistics start from prior_count pseudo-steps with a
// learned mean and log-variance per group.
#pragma once
#include <torch/torch.h>

#include <string>

#include "nn/state.h"

namespace longctx {

class TimestepNormImpl : public torch::nn::Module {
 public:
  TimestepNormImpl(int64_t dim, int64_t groups, double eps = 1e-5, int64_t prior_count = 0);
  // x [B, T, D]; `state` keys are prefixed with `prefix` (several norms may share one State).
  torch::Tensor forward(const torch::Tensor& x, State& state, const std::string& prefix = "tsn_");
  int64_t groups() const { return groups_; }

  torch::Tensor weight, bias;                 // [D]; scale is (1 + weight)
  torch::Tensor prior_mean, prior_logvar;     // [G], only when prior_count > 0

 private:
  int64_t dim_, groups_, prior_count_;
  double eps_;
};
TORCH_MODULE(TimestepNorm);

// The fields a TimestepNorm keeps under `prefix`: the count of steps and the running mean and
// variance per group.
StateSchema timestep_norm_schema(const std::string& prefix, int64_t groups);

}  // namespace longctx
