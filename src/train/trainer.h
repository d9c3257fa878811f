// The training loop: AdamW with groups, warmup + cosine, clipping, accumulation, evaluation,
// atomic checkpoints (checkpoint-N/ folders renamed into place), exact resume, JSONL log + plot.
#pragma once
#include <string>

#include "train/config.h"

namespace longctx {

struct TrainOptions {
  std::string out;          // run folder
  bool resume = false;      // continue from the latest checkpoint-N in `out`
  int64_t stop_after = 0;   // stop (with a checkpoint) after this many steps in this invocation
  int64_t stop_at = 0;      // stop (with a checkpoint) once this step is reached (schedule unchanged)
  bool quiet = false;
  // Several ranks (torchrun's environment, or `longctx train --nproc N`): the c10d backend
  // ("" = gloo on CPU), how long a collective waits for the other ranks, and how long they wait
  // for rank 0's evaluations and checkpoints.
  std::string backend;
  double timeout_s = 300, eval_timeout_s = 7200;
};

struct TrainResult {
  int64_t steps_done = 0;
  double final_loss = 0, val_loss = 0, val_bpb = 0, tokens_per_s = 0;
  int64_t tokens = 0;
};

TrainResult train(const RunConfig& cfg, const TrainOptions& opt);

}  // namespace longctx
