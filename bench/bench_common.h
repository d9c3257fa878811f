// Shared by the benchmarks: the machine's own sgemm peak, measured in the same process.
#pragma once
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "util/system.h"

namespace longctx::bench {

// Best of `reps` fp32 n x n x n products, in GFLOP/s.
inline double sgemm_gflops(int64_t n = 2048, int reps = 5) {
  torch::NoGradGuard ng;
  auto a = torch::randn({n, n}), b = torch::randn({n, n});
  torch::mm(a, b);
  double best = 0;
  for (int i = 0; i < reps; ++i) {
    double t0 = now_seconds();
    auto c = torch::mm(a, b);
    double dt = now_seconds() - t0;
    best = std::max(best, 2.0 * n * n * n / dt / 1e9);
  }
  return best;
}

// --name value flags.
inline std::string flag(int argc, char** argv, const std::string& name, const std::string& def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == "--" + name) return argv[i + 1];
  return def;
}

}  // namespace longctx::bench
