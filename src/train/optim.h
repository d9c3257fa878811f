// AdamW (decoupled weight decay, as torch.optim.AdamW) with parameter groups, a warmup +
// cosine schedule, and state saved as safetensors so a resumed run continues bit for bit.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "train/config.h"

namespace longctx {

struct ParamGroup {
  std::string name;
  double lr_scale = 1.0;
  double weight_decay = 0.0;
  std::vector<std::string> names;
  std::vector<torch::Tensor> params;
};

// Parameters into groups: the first matching rule wins; otherwise "decay" (matrices) or
// "no_decay" (vectors: norm scales, biases, gates).
std::vector<ParamGroup> make_param_groups(const std::vector<std::pair<std::string, torch::Tensor>>& params,
                                          const TrainConfig& t);

// train.trainable: parameters whose names contain one of `fragments` keep requires_grad; every
// other is frozen (requires_grad false, so make_param_groups leaves it out). Returns how many
// parameters stay trainable.
int64_t freeze_except(const std::vector<std::pair<std::string, torch::Tensor>>& params,
                      const std::vector<std::string>& fragments);

class AdamW {
 public:
  AdamW(std::vector<ParamGroup> groups, double beta1, double beta2, double eps);
  void step(double lr);  // lr for a group = lr * group.lr_scale
  void zero_grad();
  int64_t steps() const { return t_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  void save(const std::string& path) const;
  void load(const std::string& path);

 private:
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<torch::Tensor>> m_, v_;
  double b1_, b2_, eps_;
  int64_t t_ = 0;
};

double lr_at(const TrainConfig& t, int64_t step);  // step 0-based
// Global L2 norm of all gradients, clipped in place to max_norm (0 = no clip); returns the norm.
double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

}  // namespace longctx
