// longctx train: a run from a config (progress bar, JSONL log, loss plot), resumable.
#include <cstdio>
#include <string>

#include "commands.h"
#include "train/config.h"
#include "train/trainer.h"
#include "util/error.h"

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
};
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
  tr->add_option("--set", a->sets, "override a config field: path.to.field=value (repeatable; the fields are listed below)");
  tr->footer(config_fields_help());
  cmds.push_back({tr, [a, &g] {
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
                    auto r = train(cfg, o);
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
