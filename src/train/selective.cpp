#include "train/selective.h"

#include <cmath>
#include <filesystem>

#include "io/safetensors.h"
#include "util/error.h"

namespace longctx {

namespace {
int64_t kept_count(int64_t n, double keep) {
  // ceil(keep * n), with a tolerance so that keep = 0.6, n = 10 gives 6, not 7.
  auto k = static_cast<int64_t>(std::ceil(keep * double(n) - 1e-9));
  return std::clamp<int64_t>(k, n > 0 ? 1 : 0, n);
}
}  // namespace

torch::Tensor select_top(const torch::Tensor& score, const torch::Tensor& valid, double keep) {
  LCX_CHECK(score.dim() == 1 && valid.sizes() == score.sizes(), "select_top: score and valid must be [N]");
  const int64_t n = valid.sum().item<int64_t>(), k = kept_count(n, keep);
  auto s = score.detach().to(torch::kFloat64).masked_fill(~valid, -std::numeric_limits<double>::infinity());
  auto mask = torch::zeros(score.sizes(), score.options().dtype(torch::kFloat32));
  if (k == 0) return mask;
  // Stable descending order: equal scores keep the earlier position.
  auto order = std::get<1>(s.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  mask.index_fill_(0, order.narrow(0, 0, k), 1.0);
  return mask;
}

torch::Tensor select_random(const torch::Tensor& valid, double keep, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto score = at::rand(valid.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat64));
  return select_top(score.to(valid.device()), valid, keep);
}

SelectiveLoss masked_mean(const torch::Tensor& per, const torch::Tensor& mask, const torch::Tensor& valid) {
  SelectiveLoss r;
  auto m = mask.to(per.scalar_type());
  r.kept = m.sum().item<int64_t>();
  r.valid = valid.sum().item<int64_t>();
  LCX_CHECK(r.kept > 0, "selective: no token kept in this batch");
  r.loss = (per * m).sum() / double(r.kept);
  auto d = per.detach();
  r.kept_loss = r.loss.item<double>();
  auto unk = valid.to(per.scalar_type()) * (1 - m);
  double nu = unk.sum().item<double>();
  r.unkept_loss = nu > 0 ? (d * unk).sum().item<double>() / nu : 0.0;
  return r;
}

torch::Tensor token_losses(CausalLM& model, const torch::Tensor& x, const torch::Tensor& y) {
  torch::NoGradGuard ng;
  auto st = model->new_state();
  st.hand_on = false;
  auto dev = model->device();
  auto logits = model->forward(x.to(dev), st);
  auto per = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), y.to(dev).reshape({-1}),
                                                  torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  return per.view(y.sizes()).to(torch::kFloat32);
}

ReferenceLossCache::ReferenceLossCache(std::string path, std::string key, int64_t steps, int64_t micro, int64_t batch,
                                       int64_t seq)
    : path_(std::move(path)), key_(std::move(key)), steps_(steps), micro_(micro), batch_(batch), seq_(seq) {
  data_ = torch::zeros({steps_, micro_, batch_, seq_}, torch::kFloat16);
}

bool ReferenceLossCache::load() {
  if (!std::filesystem::exists(path_)) return false;
  auto f = load_safetensors(path_);
  auto it = f.metadata.find("key");
  if (it == f.metadata.end() || it->second != key_) return false;
  if (!f.has("losses") || f.at("losses").sizes() != data_.sizes()) return false;
  data_ = f.at("losses").to(torch::kFloat16).contiguous();
  return true;
}

void ReferenceLossCache::set(int64_t step, int64_t micro, const torch::Tensor& losses) {
  data_[step][micro].copy_(losses.to(torch::kCPU).to(torch::kFloat16));
}

torch::Tensor ReferenceLossCache::get(int64_t step, int64_t micro) const {
  return data_[step][micro].to(torch::kFloat32);
}

void ReferenceLossCache::save() const {
  save_safetensors(path_, {{"losses", data_}}, {{"format", "longctx-reference-losses"}, {"key", key_}});
}

TokenCategories token_categories(const std::vector<double>& steps, const std::vector<torch::Tensor>& losses) {
  LCX_CHECK(losses.size() >= 2 && steps.size() == losses.size(), "token_categories: need >= 2 checkpoints with steps");
  auto L = torch::stack(losses, 0).to(torch::kFloat64);  // [C, N]
  auto x = torch::tensor(steps, torch::kFloat64).view({-1, 1});
  auto xm = x.mean(), ym = L.mean(0, true);
  auto slope = ((x - xm) * (L - ym)).sum(0) / ((x - xm).pow(2).sum());
  auto dL = slope * (steps.back() - steps.front());
  auto last = L[-1];
  auto mean_last = last.mean();
  auto hl = dL < -0.2, lh = dL > 0.2, flat = ~(hl | lh);
  auto ll = flat & (last <= mean_last), hh = flat & (last > mean_last);
  const double n = double(last.numel());
  return {hh.sum().item<double>() / n, lh.sum().item<double>() / n, hl.sum().item<double>() / n,
          ll.sum().item<double>() / n};
}

}  // namespace longctx
