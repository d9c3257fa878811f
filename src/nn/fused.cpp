#include "nn/fused.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "util/error.h"

namespace longctx {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

namespace {

constexpr int64_t kGrain = 16;  // rows per parallel task

// An autograd Function costs a node, saved tensors and bookkeeping per call even under no_grad;
// streaming and decoding (one token per call) skip it when no gradient is wanted.
template <class... T>
bool needs_grad(const T&... t) {
  return torch::GradMode::is_enabled() && (t.requires_grad() || ...);
}

// ---------------------------------------------------------------- RMSNorm
// y and the per-row 1 / rms (r), one pass.
torch::Tensor rms_norm_forward(const torch::Tensor& x0, const torch::Tensor& w0, double eps, torch::Tensor* r_out) {
  auto x = x0.contiguous(), w = w0.contiguous();
  int64_t n = x.size(-1), rows = x.numel() / n;
  auto y = torch::empty_like(x);
  auto r = r_out ? torch::empty({rows}, x.options()) : torch::Tensor();  // kept for backward only
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rms_norm_fwd", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    scalar_t* rp = r.defined() ? r.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, rows, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const scalar_t* xr = xp + i * n;
        double ss = 0;
        for (int64_t j = 0; j < n; ++j) ss += double(xr[j]) * xr[j];
        scalar_t ri = static_cast<scalar_t>(1.0 / std::sqrt(ss / n + eps));
        if (rp) rp[i] = ri;
        scalar_t* yr = yp + i * n;
        for (int64_t j = 0; j < n; ++j) yr[j] = xr[j] * ri * wp[j];
      }
    });
  });
  if (r_out) *r_out = r;
  return y;
}

struct RMSNormFn : torch::autograd::Function<RMSNormFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x0, const torch::Tensor& w0, double eps) {
    auto x = x0.contiguous(), w = w0.contiguous();
    torch::Tensor r;
    auto y = rms_norm_forward(x, w, eps, &r);
    ctx->save_for_backward({x, w, r});
    return y;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list g) {
    auto saved = ctx->get_saved_variables();
    auto x = saved[0], w = saved[1], r = saved[2];
    auto gy = g[0].contiguous();
    int64_t n = x.size(-1), rows = x.numel() / n;
    auto gx = torch::empty_like(x);
    // Weight gradient: per-thread partial sums, reduced after.
    int nt = at::get_num_threads();
    auto gw_part = torch::zeros({nt, n}, x.options().dtype(torch::kFloat64));
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rms_norm_bwd", [&] {
      const scalar_t* xp = x.data_ptr<scalar_t>();
      const scalar_t* wp = w.data_ptr<scalar_t>();
      const scalar_t* rp = r.data_ptr<scalar_t>();
      const scalar_t* gp = gy.data_ptr<scalar_t>();
      scalar_t* gxp = gx.data_ptr<scalar_t>();
      double* gwp = gw_part.data_ptr<double>();
      at::parallel_for(0, rows, kGrain, [&](int64_t b, int64_t e) {
        double* acc = gwp + at::get_thread_num() * n;
        for (int64_t i = b; i < e; ++i) {
          const scalar_t* xr = xp + i * n;
          const scalar_t* gr = gp + i * n;
          double ri = rp[i];
          double dot = 0;  // sum_j g_j w_j x_j
          for (int64_t j = 0; j < n; ++j) {
            dot += double(gr[j]) * wp[j] * xr[j];
            acc[j] += double(gr[j]) * xr[j] * ri;
          }
          double c = ri * ri * ri * dot / n;
          scalar_t* o = gxp + i * n;
          for (int64_t j = 0; j < n; ++j) o[j] = static_cast<scalar_t>(ri * gr[j] * wp[j] - c * xr[j]);
        }
      });
    });
    return {gx, gw_part.sum(0).to(x.scalar_type()), torch::Tensor()};
  }
};

// ---------------------------------------------------------------- SwiGLU activation
torch::Tensor swiglu_forward(const torch::Tensor& gu0) {
  auto gu = gu0.contiguous();
  int64_t h2 = gu.size(-1), h = h2 / 2, rows = gu.numel() / h2;
  auto sizes = gu.sizes().vec();
  sizes.back() = h;
  auto y = torch::empty(sizes, gu.options());
  AT_DISPATCH_FLOATING_TYPES(gu.scalar_type(), "swiglu_fwd", [&] {
    const scalar_t* p = gu.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, rows, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const scalar_t* g = p + i * h2;
        const scalar_t* u = g + h;
        scalar_t* o = yp + i * h;
        for (int64_t j = 0; j < h; ++j) o[j] = g[j] / (scalar_t(1) + std::exp(-g[j])) * u[j];
      }
    });
  });
  return y;
}

struct SwiGLUFn : torch::autograd::Function<SwiGLUFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& gu0) {
    auto gu = gu0.contiguous();
    ctx->save_for_backward({gu});
    return swiglu_forward(gu);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto gu = ctx->get_saved_variables()[0];
    auto gy = grads[0].contiguous();
    int64_t h2 = gu.size(-1), h = h2 / 2, rows = gu.numel() / h2;
    auto gin = torch::empty_like(gu);
    AT_DISPATCH_FLOATING_TYPES(gu.scalar_type(), "swiglu_bwd", [&] {
      const scalar_t* p = gu.data_ptr<scalar_t>();
      const scalar_t* gp = gy.data_ptr<scalar_t>();
      scalar_t* op = gin.data_ptr<scalar_t>();
      at::parallel_for(0, rows, kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const scalar_t* g = p + i * h2;
          const scalar_t* u = g + h;
          const scalar_t* d = gp + i * h;
          scalar_t* og = op + i * h2;
          scalar_t* ou = og + h;
          for (int64_t j = 0; j < h; ++j) {
            scalar_t s = scalar_t(1) / (scalar_t(1) + std::exp(-g[j]));
            scalar_t silu = g[j] * s;
            og[j] = d[j] * u[j] * s * (scalar_t(1) + g[j] * (scalar_t(1) - s));
            ou[j] = d[j] * silu;
          }
        }
      });
    });
    return {gin};
  }
};

// ---------------------------------------------------------------- RoPE
// y = x cos + rot(x) sin with rot(x) = (-x2, x1) per pair; its transpose gives the gradient:
// gx = g cos + rot^T(g sin), rot^T(v) = (v2, -v1). `sign` = +1 forward, -1 backward.
template <class scalar_t>
void rope_kernel(const scalar_t* x, scalar_t* y, const scalar_t* cs, const scalar_t* sn, int64_t B, int64_t T,
                 int64_t H, int64_t d, bool interleaved, scalar_t sign) {
  int64_t half = d / 2;
  at::parallel_for(0, B * T, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t bt = b; bt < e; ++bt) {
      int64_t t = bt % T;
      const scalar_t* c = cs + t * half;
      const scalar_t* s = sn + t * half;
      for (int64_t hh = 0; hh < H; ++hh) {
        const scalar_t* xr = x + (bt * H + hh) * d;
        scalar_t* yr = y + (bt * H + hh) * d;
        if (!interleaved) {
          for (int64_t i = 0; i < half; ++i) {
            scalar_t x1 = xr[i], x2 = xr[i + half];
            yr[i] = x1 * c[i] - sign * x2 * s[i];
            yr[i + half] = x2 * c[i] + sign * x1 * s[i];
          }
        } else {
          for (int64_t i = 0; i < half; ++i) {
            scalar_t x1 = xr[2 * i], x2 = xr[2 * i + 1];
            yr[2 * i] = x1 * c[i] - sign * x2 * s[i];
            yr[2 * i + 1] = x2 * c[i] + sign * x1 * s[i];
          }
        }
      }
    }
  });
}

torch::Tensor rope_apply(const torch::Tensor& x0, const torch::Tensor& cos, const torch::Tensor& sin, bool inter,
                         double sign) {
  auto x = x0.contiguous();
  auto c = cos.to(x.scalar_type()).contiguous(), s = sin.to(x.scalar_type()).contiguous();
  auto y = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rope", [&] {
    rope_kernel<scalar_t>(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), c.data_ptr<scalar_t>(),
                          s.data_ptr<scalar_t>(), x.size(0), x.size(1), x.size(2), x.size(3), inter,
                          static_cast<scalar_t>(sign));
  });
  return y;
}

struct RopeFn : torch::autograd::Function<RopeFn> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin, bool inter) {
    ctx->save_for_backward({cos, sin});
    ctx->saved_data["inter"] = inter;
    return rope_apply(x, cos, sin, inter, 1.0);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list g) {
    auto s = ctx->get_saved_variables();
    return {rope_apply(g[0], s[0], s[1], ctx->saved_data["inter"].toBool(), -1.0), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor fused_rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  if (!x.device().is_cpu() || !(x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64) ||
      x.scalar_type() != weight.scalar_type())
    return rms_norm_reference(x, weight, eps);
  if (!needs_grad(x, weight)) return rms_norm_forward(x, weight, eps, nullptr);
  return RMSNormFn::apply(x, weight, eps);
}

torch::Tensor rms_norm_reference(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  auto xf = x.to(torch::kFloat32);
  if (x.scalar_type() == torch::kFloat64) xf = x;
  return (xf * torch::rsqrt(xf.pow(2).mean(-1, true) + eps)).to(x.scalar_type()) * weight;
}

torch::Tensor fused_swiglu(const torch::Tensor& gu) {
  LCX_CHECK(gu.size(-1) % 2 == 0, "swiglu: last dimension ", gu.size(-1), " must be even");
  if (!gu.device().is_cpu() || !(gu.scalar_type() == torch::kFloat32 || gu.scalar_type() == torch::kFloat64))
    return swiglu_reference(gu);
  if (!needs_grad(gu)) return swiglu_forward(gu);
  return SwiGLUFn::apply(gu);
}

torch::Tensor swiglu_reference(const torch::Tensor& gu) {
  int64_t h = gu.size(-1) / 2;
  return torch::silu(gu.narrow(-1, 0, h)) * gu.narrow(-1, h, h);
}

torch::Tensor fused_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, bool inter) {
  LCX_CHECK(x.dim() == 4 && cos.size(0) == x.size(1) && cos.size(1) * 2 == x.size(3),
            "rope: x must be [B, T, H, d] with cos/sin [T, d/2]");
  if (!x.device().is_cpu() || !(x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64))
    return rope_reference(x, cos, sin, inter);
  if (!needs_grad(x, cos, sin)) return rope_apply(x, cos, sin, inter, 1.0);
  return RopeFn::apply(x, cos, sin, inter);
}

void rope_rows(const float* x, float* y, const float* cos, const float* sin, int64_t B, int64_t T, int64_t H,
               int64_t d, bool interleaved) {
  rope_kernel<float>(x, y, cos, sin, B, T, H, d, interleaved, 1.0f);
}
void rope_rows(const double* x, double* y, const double* cos, const double* sin, int64_t B, int64_t T, int64_t H,
               int64_t d, bool interleaved) {
  rope_kernel<double>(x, y, cos, sin, B, T, H, d, interleaved, 1.0);
}

torch::Tensor rope_reference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, bool inter) {
  int64_t d = x.size(-1);
  auto c = cos.to(x.device(), x.scalar_type()), s = sin.to(x.device(), x.scalar_type());
  auto cf = (inter ? c.repeat_interleave(2, -1) : torch::cat({c, c}, -1)).view({1, x.size(1), 1, d});
  auto sf = (inter ? s.repeat_interleave(2, -1) : torch::cat({s, s}, -1)).view({1, x.size(1), 1, d});
  torch::Tensor rot;
  if (!inter) {
    rot = torch::cat({-x.narrow(-1, d / 2, d / 2), x.narrow(-1, 0, d / 2)}, -1);
  } else {
    auto xv = x.unflatten(-1, {d / 2, 2});
    rot = torch::stack({-xv.select(-1, 1), xv.select(-1, 0)}, -1).flatten(-2);
  }
  return x * cf + rot * sf;
}

}  // namespace longctx
