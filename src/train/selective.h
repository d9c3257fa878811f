// RHO-1 selective language modeling (MECHANISMS.md section 9): which tokens a batch trains on,
// the reference model's losses (on the fly or from a cache), and the token categories.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/lm.h"
#include "train/config.h"

namespace longctx {

// The kept-token mask over n scorable tokens: exactly ceil(keep * n) ones, at the highest
// `score`s among the tokens where `valid` is true (ties broken by position). score, valid [N].
torch::Tensor select_top(const torch::Tensor& score, const torch::Tensor& valid, double keep);

// A seeded random ceil(keep * n) of the valid tokens (the control run).
torch::Tensor select_random(const torch::Tensor& valid, double keep, uint64_t seed);

struct SelectiveLoss {
  torch::Tensor loss;                  // mean over kept tokens (differentiable)
  double kept_loss = 0, unkept_loss = 0;  // mean per-token loss of each side (nats)
  int64_t kept = 0, valid = 0;
};
// per [N] per-token losses (with autograd), mask [N] float 0/1.
SelectiveLoss masked_mean(const torch::Tensor& per, const torch::Tensor& mask, const torch::Tensor& valid);

// Per-token losses of `model` on (x, y) without gradients: [B, T] float32.
torch::Tensor token_losses(CausalLM& model, const torch::Tensor& x, const torch::Tensor& y);

// Reference losses of every (step, micro) batch of a run, stored once as float16 in a
// safetensors file whose metadata names what they were computed from (reference weights'
// hash, data, batch shape); reused when it matches, rebuilt atomically otherwise.
class ReferenceLossCache {
 public:
  // key: a string naming everything the losses depend on.
  ReferenceLossCache(std::string path, std::string key, int64_t steps, int64_t micro, int64_t batch, int64_t seq);
  bool load();  // true when the file exists and matches
  void set(int64_t step, int64_t micro, const torch::Tensor& losses);  // [B, T]
  torch::Tensor get(int64_t step, int64_t micro) const;                  // [B, T] float32
  void save() const;

 private:
  std::string path_, key_;
  int64_t steps_, micro_, batch_, seq_;
  torch::Tensor data_;  // [steps, micro, B, T] float16
};

// RHO-1's four categories of tokens from their losses at successive checkpoints: each token's
// losses are fitted by a line over `steps`; dL = fit(last) - fit(first); dL < -0.2: H->L,
// dL > 0.2: L->H; otherwise L->L when its last loss <= the mean last loss, else H->H.
struct TokenCategories {
  double hh = 0, lh = 0, hl = 0, ll = 0;  // shares (sum 1)
};
// losses[c] = per-token losses at checkpoint c (same tokens in the same order), >= 2 checkpoints.
TokenCategories token_categories(const std::vector<double>& steps, const std::vector<torch::Tensor>& losses);

}  // namespace longctx
