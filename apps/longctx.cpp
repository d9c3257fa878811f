// longctx: one subcommand per job (apps/cmd_*.cpp). Errors inside the library are thrown with a
// message naming the file, field or limit; they are printed here once, with exit code 1.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "commands.h"
#include "nn/attention.h"
#include "nn/weight_policy.h"
#include "util/system.h"

using namespace longctx;

int main(int argc, char** argv) {
  CLI::App app{"longctx: train, stream, evaluate and serve language models whose context has no fixed end"};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--threads) also after the subcommand: longctx serve --threads 2
  int threads = 0;
  app.add_option("--threads", threads, "intra-op threads (default: every core); also accepted after the subcommand");
  std::string weights = "stored", precision = "highest";
  app.add_option("--weights", weights,
                 "how a model read from a folder holds its F16 / BF16 matrices: 'stored' keeps that dtype "
                 "(half the memory of float32), 'f32' widens them at load")
      ->check(CLI::IsMember({"stored", "f32"}));
  app.add_option("--matmul-precision", precision,
                 "'highest': stored BF16 / F16 matrices are widened to float32 per use (the float32 model's "
                 "results); 'medium': BF16 matrices multiply in BF16 (faster where the CPU has BF16 "
                 "instructions, activations rounded to BF16)")
      ->check(CLI::IsMember({"highest", "medium"}));
  std::string attention_kernel = "fused";
  app.add_option("--attention", attention_kernel,
                 "CPU attention: 'fused' (one kernel, online softmax, no mask tensor) or 'blocked' (the "
                 "previous libtorch-ops implementation, for comparisons)")
      ->check(CLI::IsMember({"fused", "blocked"}));
  cli::Globals g;
  g.argv.assign(argv, argv + argc);
  cli::Commands cmds;
  cli::add_train(app, cmds, g);
  cli::add_eval(app, cmds, g);
  cli::add_generate(app, cmds);
  cli::add_info(app, cmds);
  cli::add_compare(app, cmds);
  cli::add_export(app, cmds);
  cli::add_tokenizer(app, cmds);
  cli::add_search(app, cmds);
  cli::add_ruler(app, cmds);
  cli::add_litm(app, cmds);
  cli::add_serve(app, cmds);
  CLI11_PARSE(app, argc, argv);

  try {
    // A rank started by torchrun shares the machine with LOCAL_WORLD_SIZE others: its share of the cores.
    if (threads <= 0)
      if (const char* lw = std::getenv("LOCAL_WORLD_SIZE"); lw && std::atoi(lw) > 1)
        threads = std::max(1, int(std::thread::hardware_concurrency()) / std::atoi(lw));
    g.threads = set_threads(threads);
    weight_policy().keep_stored = weights == "stored";
    weight_policy().bf16_matmul = precision == "medium";
    set_attention_impl(attention_kernel == "fused" ? AttentionImpl::fused : AttentionImpl::blocked);
    tune_allocator();
    auto warn = blas_warning();
    if (!warn.empty()) std::fprintf(stderr, "%s\n", warn.c_str());
    for (auto& c : cmds)
      if (*c.sub) return c.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "longctx: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
