// The attention kernel alone: the fused CPU kernel against the previous implementation (libtorch
// ops per query block, materialised mask) and the sgemm peak, measured in the same process.
//
//   build/bench_attention [--threads 2] [--heads 4] [--dh 64] [--reps 20]
//
// Shapes are the streaming and training ones of docs/BENCHMARKS.md: a 512-token chunk over a
// 512-token window (batch 1), a 512-token Infini segment, one decoded token over a 511-token
// cache, and a training batch (8 x 2048, causal) forward and backward.
#include <chrono>
#include <functional>

#include "bench_common.h"
#include "nn/attention.h"
#include "util/system.h"

using namespace longctx;

namespace {

double seconds_per_call(const std::function<void()>& f, int reps) {
  f();  // warm-up
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

struct Shape {
  const char* key;
  const char* name;
  int64_t B, Tq, Tk, window;
  bool backward;
};

}  // namespace

int main(int argc, char** argv) {
  bench::check_flags(argc, argv, {"threads", "heads", "dh", "reps", "kernels", "shapes"},
                     "usage: bench_attention [--threads N] [--heads 4] [--dh 64] [--reps 20] [--kernels blocked,fused]\n"
                     "                       [--shapes chunk,segment,decode,train]\n");
  const std::string kernels = bench::flag(argc, argv, "kernels", "blocked,fused");
  const std::string shapes = bench::flag(argc, argv, "shapes", "chunk,segment,decode,train");
  auto listed = [](const std::string& list, const std::string& x) { return ("," + list + ",").find("," + x + ",") != std::string::npos; };
  int threads = set_threads(std::atoi(bench::flag(argc, argv, "threads", "0").c_str()));
  const int64_t H = std::atoll(bench::flag(argc, argv, "heads", "4").c_str());
  const int64_t d = std::atoll(bench::flag(argc, argv, "dh", "64").c_str());
  const int reps = std::atoi(bench::flag(argc, argv, "reps", "20").c_str());
  const double peak = bench::sgemm_gflops();
  std::printf("%d threads, %lld heads of %lld; sgemm peak in this run (2048^3 fp32): %.1f GFLOP/s\n\n", threads,
              (long long)H, (long long)d, peak);
  std::printf("| shape | kernel | ms per call | GFLOP/s (visible scores) | fraction of sgemm peak | speed-up |\n"
              "|---|---|---|---|---|---|\n");
  for (Shape s : {Shape{"chunk", "chunk 512 over window 512 (B 1)", 1, 512, 1023, 512, false},
                  Shape{"segment", "Infini segment 512, causal (B 1)", 1, 512, 512, 0, false},
                  Shape{"decode", "decode: 1 token over 511 cached (B 1)", 1, 1, 512, 512, false},
                  Shape{"train", "training 8 x 2048 causal, forward + backward", 8, 2048, 2048, 0, true}}) {
    if (!listed(shapes, s.key)) continue;
    torch::manual_seed(0);
    auto q = torch::randn({s.B, s.Tq, H, d}).transpose(1, 2), k = torch::randn({s.B, H, s.Tk, d}),
         v = torch::randn({s.B, H, s.Tk, d});
    auto kp = torch::arange(0, s.Tk, torch::kInt64), qp = torch::arange(s.Tk - s.Tq, s.Tk, torch::kInt64);
    AttentionOptions o;
    o.window = s.window;
    // FLOPs of the visible scores only: 2 GEMMs (4 d per score) forward, 2.5x that with backward.
    double visible = 0;
    for (int64_t i = 0; i < s.Tq; ++i) {
      int64_t p = s.Tk - s.Tq + i;
      visible += s.window > 0 ? std::min<int64_t>(p + 1, s.window) : p + 1;
    }
    const double flops = s.B * H * visible * 4.0 * d * (s.backward ? 3.5 : 1.0);
    double base = 0;
    for (auto impl : {AttentionImpl::blocked, AttentionImpl::fused}) {
      if (!listed(kernels, impl == AttentionImpl::fused ? "fused" : "blocked")) continue;
      set_attention_impl(impl);
      double sec;
      if (s.backward) {
        auto qg = q.detach().requires_grad_(), kg = k.detach().requires_grad_(), vg = v.detach().requires_grad_();
        auto g = torch::randn({s.B, H, s.Tq, d});
        sec = seconds_per_call([&] { (attention(qg, kg, vg, qp, kp, o) * g).sum().backward(); }, std::max(1, reps / 10));
      } else {
        torch::NoGradGuard ng;
        sec = seconds_per_call([&] { attention(q, k, v, qp, kp, o); }, s.Tq == 1 ? reps * 50 : reps);
      }
      if (impl == AttentionImpl::blocked) base = sec;
      std::printf("| %s | %s | %.3f | %.1f | %.3f | %s |\n", s.name, impl == AttentionImpl::fused ? "fused" : "blocked (before)",
                  sec * 1e3, flops / sec / 1e9, flops / sec / 1e9 / peak,
                  impl == AttentionImpl::fused && base > 0 ? (std::to_string(base / sec).substr(0, 4) + "x").c_str() : "");
      std::fflush(stdout);
    }
  }
  return 0;
}
