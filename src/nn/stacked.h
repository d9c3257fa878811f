// Weights multiplied together (q/k/v, gate/up) kept as row blocks of one buffer, so that the
// fused GEMM reads them in place instead of concatenating them on every call.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace longctx {

// Re-points each weight at its rows of one new buffer, values unchanged (the parameters keep
// their names and identities). Under WeightsFromFile the buffer is left unwritten (the weights are
// read into their rows next, in place, as load_pretrained does).
void stack_rows(const std::vector<torch::Tensor>& weights);

// The weights stacked by rows: a view of their shared buffer when they are its consecutive row
// blocks and no gradient is wanted (inference: no copy); otherwise torch::cat (autograd, or
// weights that were replaced: a checkpoint's stored dtype, a clone).
torch::Tensor stacked_weight(const std::vector<torch::Tensor>& weights);

}  // namespace longctx
