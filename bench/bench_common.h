// Shared by the benchmarks: the machine's own sgemm peak, measured in the same process.
#pragma once
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "nn/attention.h"
#include "util/error.h"
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

// Runs f() in a forked child and returns its result (a plain struct) through a pipe, so that the
// child's peak RSS is its own and the parent starts no thread pool and keeps no heap (glibc keeps
// freed memory when tune_allocator raised the trim threshold, and a later child inherits it as
// resident pages). False when the child failed; *status gets its exit status.
template <class R, class F>
bool in_child(F&& f, R& out, int* status = nullptr) {
  static_assert(std::is_trivially_copyable<R>::value, "in_child returns a plain struct");
  int fd[2];
  if (pipe(fd) != 0) return false;
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    close(fd[0]);
    R r = f();
    if (write(fd[1], &r, sizeof r) != static_cast<ssize_t>(sizeof r)) _exit(1);
    _exit(0);
  }
  close(fd[1]);
  bool ok = read(fd[0], &out, sizeof out) == static_cast<ssize_t>(sizeof out);
  close(fd[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (status) *status = st;
  return ok;
}

// --name value flags.
inline std::string flag(int argc, char** argv, const std::string& name, const std::string& def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == "--" + name) return argv[i + 1];
  return def;
}

// Every argument must be "--name value" with a name in `known`: --help (or -h) prints `usage`
// and exits 0, anything else prints it and exits 2, before any work starts.
// --attention fused|blocked: which CPU attention kernel the run uses (the previous one, blocked,
// is the same run's "before"). Sets it and returns its name.
inline std::string attention_flag(int argc, char** argv) {
  const std::string impl = flag(argc, argv, "attention", "fused");
  LCX_CHECK(impl == "fused" || impl == "blocked", "--attention must be fused or blocked, got '", impl, "'");
  set_attention_impl(impl == "fused" ? AttentionImpl::fused : AttentionImpl::blocked);
  return impl;
}

inline void check_flags(int argc, char** argv, std::initializer_list<const char*> known, const char* usage) {
  for (int i = 1; i < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    bool ok = a.rfind("--", 0) == 0 && i + 1 < argc;
    if (ok) {
      ok = false;
      for (auto* k : known) ok = ok || a == std::string("--") + k;
    }
    if (!ok) {
      std::fprintf(stderr, "%s: '%s' is not a flag it takes (or lacks its value)\n%s", argv[0], a.c_str(), usage);
      std::exit(2);
    }
  }
}

}  // namespace longctx::bench
