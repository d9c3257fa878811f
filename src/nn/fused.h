// Fused CPU kernels for the memory-bound parts of a block, as autograd functions: each is one
// pass over memory forward and one backward, where the composite versions take 5-10 passes.
// Each has a composite reference (`*_reference`) that the tests compare it with, values and
// gradients, in float32 and float64.
#pragma once
#include <torch/torch.h>

namespace longctx {

// y = x * rsqrt(mean(x^2, -1) + eps) * weight; statistics in float32 or better.
torch::Tensor fused_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);
torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// gu [..., 2h] = [gate | up] -> silu(gate) * up, [..., h].
torch::Tensor fused_swiglu(const torch::Tensor& gu);
torch::Tensor swiglu_reference(const torch::Tensor& gu);

// Rotary embedding of x [B, T, H, d] (time at dim 1) with cos/sin [T, d/2] (already scaled):
// rotate-half layout (pairs i, i + d/2) or interleaved (pairs 2i, 2i+1).
torch::Tensor fused_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, bool interleaved);
// The rotation alone on raw rows, no tensors and no autograd (RoPE's few-position path):
// x, y [B, T, H, d] contiguous, cos / sin [T, d/2] already scaled.
void rope_rows(const float* x, float* y, const float* cos, const float* sin, int64_t B, int64_t T, int64_t H,
               int64_t d, bool interleaved);
void rope_rows(const double* x, double* y, const double* cos, const double* sin, int64_t B, int64_t T, int64_t H,
               int64_t d, bool interleaved);
torch::Tensor rope_reference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, bool interleaved);

}  // namespace longctx
