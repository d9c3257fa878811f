// Linear layers and embeddings whose weights may be held in the dtype a checkpoint stores them
// in (F16 / BF16) while activations stay float32, and the policy that says how such weights are
// multiplied. Parameter names follow torch::nn ("weight", "bias"), and a fresh layer draws the
// same random numbers torch::nn::Linear / torch::nn::Embedding draw.
#pragma once
#include <torch/torch.h>

#include <set>

#include "nn/weight_policy.h"

namespace longctx {

// While one is alive on this thread, Linear and Embedding layers allocate their weights without
// initialising them and CausalLM skips its initialisation of them: the caller fills every one
// from a file. Memory never written is not resident, so a float32 allocation replaced by the
// stored dtype's costs no RSS.
class WeightsFromFile {
 public:
  WeightsFromFile();
  ~WeightsFromFile();
  WeightsFromFile(const WeightsFromFile&) = delete;
  WeightsFromFile& operator=(const WeightsFromFile&) = delete;

 private:
  bool prev_;
};
bool weights_from_file();

// x [..., in] @ w[out, in]^T in x's dtype. A weight held in another dtype is multiplied per
// weight_policy(): widened per use (in blocks of rows when large and no gradient is recorded,
// so the widened copy stays within 16 MB) or, for BF16 with bf16_matmul, in BF16.
torch::Tensor matmul_t(const torch::Tensor& x, const torch::Tensor& w);

class LinearImpl : public torch::nn::Cloneable<LinearImpl> {
 public:
  LinearImpl(int64_t in, int64_t out) : LinearImpl(torch::nn::LinearOptions(in, out)) {}
  explicit LinearImpl(const torch::nn::LinearOptions& options);
  void reset() override;
  // torch::nn::Linear's initialisation: kaiming_uniform_(a = sqrt(5)), bias U(-1/sqrt(in), ..).
  void reset_parameters();
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::LinearOptions options;
  torch::Tensor weight;  // [out, in], float32 or a stored F16 / BF16
  torch::Tensor bias;    // [out] float32, undefined without bias
};
TORCH_MODULE(Linear);

class EmbeddingImpl : public torch::nn::Cloneable<EmbeddingImpl> {
 public:
  EmbeddingImpl(int64_t num, int64_t dim);
  void reset() override;
  // ids [...] int64 -> rows [..., dim] float32 whatever dtype the weight is held in.
  torch::Tensor forward(const torch::Tensor& ids);
  int64_t num, dim;
  torch::Tensor weight;  // [num, dim]
};
TORCH_MODULE(Embedding);

// The weights of every Linear and Embedding layer under `m`: the matrices that may be held in a
// stored dtype.
std::set<const c10::TensorImpl*> matrix_weights(const torch::nn::Module& m);

}  // namespace longctx
