#include "train/optim.h"

#include <cmath>

#include "io/safetensors.h"
#include "util/error.h"

namespace longctx {

std::vector<ParamGroup> make_param_groups(const std::vector<std::pair<std::string, torch::Tensor>>& params,
                                          const TrainConfig& t) {
  std::vector<ParamGroup> g;
  for (auto& r : t.param_groups) g.push_back({"match:" + r.match, r.lr_scale, r.weight_decay, {}, {}});
  size_t idecay = g.size(), inodecay = g.size() + 1;
  g.push_back({"decay", 1.0, t.weight_decay, {}, {}});
  g.push_back({"no_decay", 1.0, 0.0, {}, {}});
  for (auto& [n, p] : params) {
    if (!p.requires_grad()) continue;
    size_t gi = p.dim() >= 2 ? idecay : inodecay;
    for (size_t i = 0; i < t.param_groups.size(); ++i)
      if (n.find(t.param_groups[i].match) != std::string::npos) {
        gi = i;
        break;
      }
    g[gi].names.push_back(n);
    g[gi].params.push_back(p);
  }
  std::vector<ParamGroup> out;
  for (auto& x : g)
    if (!x.params.empty()) out.push_back(std::move(x));
  return out;
}

int64_t freeze_except(const std::vector<std::pair<std::string, torch::Tensor>>& params,
                      const std::vector<std::string>& fragments) {
  int64_t n = 0;
  for (auto& [name, p] : params) {
    bool train = false;
    for (auto& s : fragments) train = train || name.find(s) != std::string::npos;
    auto q = p;  // the same parameter (a handle)
    q.set_requires_grad(train);
    n += train;
  }
  return n;
}

AdamW::AdamW(std::vector<ParamGroup> groups, double beta1, double beta2, double eps)
    : groups_(std::move(groups)), b1_(beta1), b2_(beta2), eps_(eps) {
  for (auto& g : groups_) {
    m_.emplace_back();
    v_.emplace_back();
    for (auto& p : g.params) {
      m_.back().push_back(torch::zeros_like(p));
      v_.back().push_back(torch::zeros_like(p));
    }
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard ng;
  ++t_;
  double bc1 = 1 - std::pow(b1_, double(t_)), bc2 = 1 - std::pow(b2_, double(t_));
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    auto& g = groups_[gi];
    double glr = lr * g.lr_scale;
    for (size_t i = 0; i < g.params.size(); ++i) {
      auto& p = g.params[i];
      if (!p.grad().defined()) continue;
      auto& gr = p.grad();
      auto& m = m_[gi][i];
      auto& v = v_[gi][i];
      m.mul_(b1_).add_(gr, 1 - b1_);
      v.mul_(b2_).addcmul_(gr, gr, 1 - b2_);
      if (g.weight_decay > 0) p.mul_(1 - glr * g.weight_decay);
      auto denom = (v.sqrt() / std::sqrt(bc2)).add_(eps_);
      p.addcdiv_(m, denom, -glr / bc1);
    }
  }
}

void AdamW::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params)
      if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
}

void AdamW::save(const std::string& path) const {
  std::vector<std::pair<std::string, torch::Tensor>> t;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t i = 0; i < groups_[gi].params.size(); ++i) {
      t.push_back({"exp_avg." + groups_[gi].names[i], m_[gi][i]});
      t.push_back({"exp_avg_sq." + groups_[gi].names[i], v_[gi][i]});
    }
  save_safetensors(path, t, {{"format", "longctx-adamw"}, {"step", std::to_string(t_)}});
}

void AdamW::load(const std::string& path) {
  auto f = load_safetensors(path);
  LCX_CHECK(f.metadata.count("step") && f.metadata["format"] == "longctx-adamw", path,
            ": not a longctx optimizer state");
  t_ = std::stoll(f.metadata["step"]);
  torch::NoGradGuard ng;
  for (size_t gi = 0; gi < groups_.size(); ++gi)
    for (size_t i = 0; i < groups_[gi].params.size(); ++i) {
      const auto& n = groups_[gi].names[i];
      auto a = f.at("exp_avg." + n), b = f.at("exp_avg_sq." + n);
      LCX_CHECK(a.sizes() == m_[gi][i].sizes() && b.sizes() == v_[gi][i].sizes(), path, ": optimizer state for '", n,
                "' has the wrong shape");
      m_[gi][i].copy_(a);
      v_[gi][i].copy_(b);
    }
}

double lr_at(const TrainConfig& t, int64_t step) {
  if (step < t.warmup_steps) return t.lr * double(step + 1) / double(t.warmup_steps);
  int64_t span = std::max<int64_t>(1, t.steps - t.warmup_steps);
  double prog = std::min(1.0, double(step - t.warmup_steps) / double(span));
  double minlr = t.lr * t.min_lr_ratio;
  return minlr + 0.5 * (t.lr - minlr) * (1 + std::cos(M_PI * prog));
}

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard ng;
  double total = 0;
  for (auto& p : params)
    if (p.grad().defined()) total += p.grad().pow(2).sum().item<double>();
  double norm = std::sqrt(total);
  if (max_norm > 0 && norm > max_norm) {
    double s = max_norm / (norm + 1e-6);
    for (auto& p : params)
      if (p.grad().defined()) p.grad().mul_(s);
  }
  return norm;
}

}  // namespace longctx
