// longctx train: a run from a config (progress bar, JSONL log, loss plot), resumable.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "commands.h"
#include "train/config.h"
#include "train/distributed.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/system.h"

namespace longctx::cli {

namespace {

// The config's fields, from their one declaration (RunConfig::fields): path, type, default, help.
std::string config_fields_help() {
  std::string s = "Config fields (a config file's JSON, or --set path=value; model.mixer's own fields are the mechanism's):\n";
  for (auto& d : RunConfig::fields()) {
    if (d.type == "object" || d.type == "array") {
      s += "  " + d.path + "  (" + d.type + ") " + d.help + "\n";
      continue;
    }
    std::string line = "  " + d.path + " = " + d.value;
    if (line.size() < 44) line.resize(44, ' ');
    s += line + "  " + d.help + (d.rule.empty() ? "" : "; " + d.rule) + "\n";
  }
  return s;
}

struct Args {
  std::string config, out;
  bool resume = false;
  int64_t steps = 0, stop_after = 0, stop_at = 0;
  std::vector<std::string> sets;
  int nproc = 1;
  std::string backend;
  double timeout = 300, eval_timeout = 7200;
};

// The command line for each rank: without --nproc and --threads (the launcher sets threads).
std::vector<std::string> rank_argv(const std::vector<std::string>& argv) {
  std::vector<std::string> out;
  for (size_t i = 0; i < argv.size(); ++i) {
    const auto& a = argv[i];
    if (a == "--nproc" || a == "--threads") {
      ++i;
      continue;
    }
    if (a.rfind("--nproc=", 0) == 0 || a.rfind("--threads=", 0) == 0) continue;
    out.push_back(a);
  }
  return out;
}
}  // namespace

void add_train(CLI::App& app, Commands& cmds, const Globals& g) {
  auto a = std::make_shared<Args>();
  auto* tr = app.add_subcommand("train", "train a model from a config (progress bar, JSONL log, loss plot)");
  tr->add_option("--config", a->config, "config file (configs/*.json); with --resume, defaults to the run's own");
  tr->add_option("--out", a->out, "run folder (checkpoints, log.jsonl, loss.svg)")->required();
  tr->add_flag("--resume", a->resume, "continue from the latest checkpoint in --out");
  tr->add_option("--steps", a->steps, "override train.steps");
  tr->add_option("--stop-after", a->stop_after, "stop after this many steps (a checkpoint is written)");
  tr->add_option("--stop-at", a->stop_at, "stop once this step is reached, keeping the schedule of train.steps (a checkpoint is written)");
  tr->add_option("--nproc", a->nproc,
                 "data parallel: run N ranks on this machine (c10d over Gloo, threads split between them); "
                 "several machines: start one process per rank with torchrun's RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT")
      ->check(CLI::Range(1, 1024));
  tr->add_option("--backend", a->backend, "c10d backend: gloo (default on CPU) or nccl");
  tr->add_option("--timeout", a->timeout, "seconds a collective waits for the other ranks before the run fails (default 300)");
  tr->add_option("--eval-timeout", a->eval_timeout,
                 "seconds the other ranks wait for rank 0's evaluations and checkpoints (default 7200)");
  tr->add_option("--set", a->sets, "override a config field: path.to.field=value (repeatable; the fields are listed below)");
  tr->footer(config_fields_help());
  cmds.push_back({tr, [a, &g] {
                    if (a->nproc > 1) {
                      LCX_CHECK(!std::getenv("WORLD_SIZE"), "train: --nproc with WORLD_SIZE set (torchrun starts the ranks itself)");
                      return launch_local_ranks(a->nproc, std::max(1, g.threads / a->nproc), rank_argv(g.argv), 0);
                    }
                    std::string cfg_path = a->config;
                    if (cfg_path.empty()) {
                      LCX_CHECK(a->resume, "train: --config is required (or --resume with an existing run)");
                      cfg_path = a->out + "/config.json";
                    }
                    auto sets = a->sets;
                    if (a->steps > 0) sets.push_back("train.steps=" + std::to_string(a->steps));
                    auto cfg = RunConfig::from_file(cfg_path, sets);
                    std::fprintf(stderr, "longctx train: %s -> %s (%d threads)\n", cfg_path.c_str(), a->out.c_str(),
                                 g.threads);
                    TrainOptions o;
                    o.out = a->out;
                    o.resume = a->resume;
                    o.stop_after = a->stop_after;
                    o.stop_at = a->stop_at;
                    o.backend = a->backend;
                    o.timeout_s = a->timeout;
                    o.eval_timeout_s = a->eval_timeout;
                    tune_allocator_for_training();
                    auto r = train(cfg, o);
                    if (DistEnv::from_environment().rank > 0) return 0;  // rank 0 reports
                    std::printf("steps %lld  tokens %lld  final train loss %.4f  ", (long long)r.steps_done,
                                (long long)r.tokens, r.final_loss);
                    if (r.val_bpb > 0)
                      std::printf("validation loss %.4f  validation bits/byte %.4f  ", r.val_loss, r.val_bpb);
                    else
                      std::printf("(no validation in this invocation)  ");
                    std::printf("%.0f tokens/s\n", r.tokens_per_s);
                    return 0;
                  }});
}

}  // namespace longctx::cli
