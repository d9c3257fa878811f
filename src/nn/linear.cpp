#include "nn/linear.h"

#include <climits>
#include <cmath>

#include "nn/blas.h"

namespace longctx {
namespace {
thread_local bool g_from_file = false;
constexpr int64_t kWidenElements = int64_t(4) << 20;  // 16 MB of float32 per widened block
}  // namespace

WeightPolicy& weight_policy() {
  static WeightPolicy p;
  return p;
}

WeightsFromFile::WeightsFromFile() : prev_(g_from_file) { g_from_file = true; }
WeightsFromFile::~WeightsFromFile() { g_from_file = prev_; }
bool weights_from_file() { return g_from_file; }

torch::Tensor matmul_t(const torch::Tensor& x, const torch::Tensor& w) {
  if (w.scalar_type() == x.scalar_type()) {
    if (x.dim() >= 1 && x.numel() == x.size(-1) && x.device().is_cpu()) {
      // One row (a decoded token): a matrix-vector product. A GEMM would first pack all of w.
      auto sizes = x.sizes().vec();
      sizes.back() = w.size(0);
      const bool grad = torch::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad());
      if (!grad && w.is_contiguous() && x.is_contiguous() && w.size(1) == x.size(-1) && w.numel() > 0 && w.numel() < INT_MAX &&
          (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble)) {
        // Straight to BLAS: mv's dispatch, reshapes and checks cost as much as a small GEMV here.
        auto y = torch::empty(sizes, x.options());
        const char t = 'T';  // row-major w [out, in] is the column-major A [in, out]: y = A^T x
        const int M = int(w.size(1)), N = int(w.size(0)), one = 1;
        if (x.scalar_type() == torch::kFloat) {
          const float a = 1, b = 0;
          sgemv_(&t, &M, &N, &a, w.data_ptr<float>(), &M, x.data_ptr<float>(), &one, &b, y.data_ptr<float>(), &one);
        } else {
          const double a = 1, b = 0;
          dgemv_(&t, &M, &N, &a, w.data_ptr<double>(), &M, x.data_ptr<double>(), &one, &b, y.data_ptr<double>(), &one);
        }
        return y;
      }
      return torch::mv(w, x.reshape({-1})).view(sizes);
    }
    return torch::matmul(x, w.t());
  }
  if (weight_policy().bf16_matmul && w.scalar_type() == torch::kBFloat16)
    return torch::matmul(x.to(torch::kBFloat16), w.t()).to(x.scalar_type());
  const int64_t rows = w.size(0), cols = w.size(1);
  const int64_t block = std::max<int64_t>(1, kWidenElements / std::max<int64_t>(1, cols));
  if (rows <= block || torch::GradMode::is_enabled()) return torch::matmul(x, w.to(x.scalar_type()).t());
  auto x2 = x.reshape({-1, cols});
  auto out = torch::empty({x2.size(0), rows}, x.options());
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t n = std::min(block, rows - r0);
    auto o = out.narrow(1, r0, n);
    torch::mm_out(o, x2, w.narrow(0, r0, n).to(x.scalar_type()).t());
  }
  auto sizes = x.sizes().vec();
  sizes.back() = rows;
  return out.view(sizes);
}

LinearImpl::LinearImpl(const torch::nn::LinearOptions& o) : options(o) { reset(); }

void LinearImpl::reset() {
  weight = register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
  if (options.bias())
    bias = register_parameter("bias", torch::empty(options.out_features()));
  else
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  if (!weights_from_file()) reset_parameters();
}

void LinearImpl::reset_parameters() {
  torch::NoGradGuard ng;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5));
  if (bias.defined()) {
    const auto fan_in = weight.size(1);
    const double bound = fan_in > 0 ? 1 / std::sqrt(double(fan_in)) : 0;
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  const bool one_row = x.dim() >= 1 && x.numel() == x.size(-1);  // decoding: matmul_t's GEMV
  if (weight.scalar_type() == x.scalar_type() && !one_row) return torch::linear(x, weight, bias);
  auto y = matmul_t(x, weight);
  return bias.defined() ? y + bias.to(y.scalar_type()) : y;
}

EmbeddingImpl::EmbeddingImpl(int64_t n, int64_t d) : num(n), dim(d) { reset(); }

void EmbeddingImpl::reset() {
  weight = register_parameter("weight", torch::empty({num, dim}));
  if (!weights_from_file()) {
    torch::NoGradGuard ng;
    torch::nn::init::normal_(weight);
  }
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) {
  auto rows = torch::embedding(weight, ids);
  return rows.scalar_type() == torch::kFloat32 || rows.scalar_type() == torch::kFloat64 ? rows : rows.to(torch::kFloat32);
}

std::set<const c10::TensorImpl*> matrix_weights(const torch::nn::Module& m) {
  std::set<const c10::TensorImpl*> out;
  for (auto& mod : m.modules(/*include_self=*/true)) {
    if (auto* l = dynamic_cast<const LinearImpl*>(mod.get())) out.insert(l->weight.unsafeGetTensorImpl());
    if (auto* e = dynamic_cast<const EmbeddingImpl*>(mod.get())) out.insert(e->weight.unsafeGetTensorImpl());
  }
  return out;
}

}  // namespace longctx
