#include "nn/stacked.h"

#include "nn/linear.h"

namespace longctx {

void stack_rows(const std::vector<torch::Tensor>& weights) {
  if (weights.empty()) return;
  torch::NoGradGuard no_grad;
  // Weights read from a file next (WeightsFromFile): the buffer is allocated, not written, so it
  // is not resident until the reader fills each row block in place; otherwise it holds the
  // initialised values.
  int64_t rows = 0;
  for (auto& w : weights) rows += w.size(0);
  auto all = weights_from_file() ? torch::empty({rows, weights[0].size(1)}, weights[0].options())
                                 : torch::cat(weights, 0);
  int64_t row = 0;
  for (auto w : weights) {  // a handle to the same parameter: set_data changes what the module holds
    const int64_t n = w.size(0);
    w.set_data(all.narrow(0, row, n));
    row += n;
  }
}

torch::Tensor stacked_weight(const std::vector<torch::Tensor>& weights) {
  const auto& a = weights.at(0);
  bool in_place = a.is_contiguous() && a.dim() == 2;
  bool grad = a.requires_grad();
  int64_t rows = a.size(0);
  auto next = static_cast<const char*>(a.data_ptr()) + a.nbytes();
  for (size_t i = 1; i < weights.size() && in_place; ++i) {
    const auto& w = weights[i];
    in_place = w.is_contiguous() && w.dim() == 2 && w.scalar_type() == a.scalar_type() && w.size(1) == a.size(1) &&
               w.device() == a.device() && static_cast<const char*>(w.data_ptr()) == next &&
               w.storage().is_alias_of(a.storage());
    next += w.nbytes();
    rows += w.size(0);
    grad = grad || w.requires_grad();
  }
  if (in_place && !(grad && torch::GradMode::is_enabled()))
    return a.detach().as_strided({rows, a.size(1)}, {a.size(1), 1}, a.storage_offset());
  return torch::cat(weights, 0);
}

}  // namespace longctx
