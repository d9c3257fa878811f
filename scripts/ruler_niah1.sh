#!/usr/bin/env bash
# One task with dense supervision, the diagnostics beside the zoo's mixture (issue 10;
# docs/RESULTS.md "RULER and lost in the middle over the zoo"). Two runs on RULER's niah_single_1,
# 90% of rows one sample of 512-768 tokens, the answer weighted x20 (the passkey recipe's weight),
# 16 rows x 768 tokens per step, seed 0:
#   full          the mixture's full-attention model (0.87M parameters) from scratch, 800 steps
#                 (9.8M tokens): does the task alone, densely taught, get learned?
#   from-passkey  the passkey recipe's checked-in model (models/infini-passkey-linear, 0.67M, which
#                 already copies a key out of a few hundred tokens), 300 steps (3.7M tokens): the
#                 positive control for the harness and the training rows.
# Then RULER niah_single_1 at 768, 1536 and 4096 tokens, SAMPLES per length, seed 0, for both, for
# models/infini-passkey-linear before fine-tuning and for the mixture's full-attention arm
# (runs/ruler-mix/full, if trained), all on the same samples.
# Resumes; skips what is complete. Environment: LONGCTX, OUT, MIX, THREADS, SAMPLES.
set -euo pipefail
LONGCTX=${LONGCTX:-build/longctx}
OUT=${OUT:-runs/ruler-niah1}
MIX=${MIX:-runs/ruler-mix}
THREADS=${THREADS:-2}
SAMPLES=${SAMPLES:-20}
mkdir -p "$OUT"
. "$(dirname "$0")/train_arm.sh"
train_arm "$OUT/full" --config configs/ruler-niah1-full.json
train_arm "$OUT/from-passkey" --config configs/ruler-niah1-from-passkey.json
eval_one() {
  local model=$1 out=$2
  if [ ! -f "$out/DONE-$SAMPLES" ]; then
    echo "[$model] RULER niah_single_1 at 768,1536,4096 (log: $out.log)"
    "$LONGCTX" --threads "$THREADS" ruler --model "$model" --tasks niah_single_1 --lengths 768,1536,4096 \
      --samples "$SAMPLES" --seed 0 --out "$out" >"$out.log" 2>&1
    touch "$out/DONE-$SAMPLES"
  fi
}
eval_one "$OUT/full" "$OUT/full/ruler"
eval_one "$OUT/from-passkey" "$OUT/from-passkey/ruler"
eval_one models/infini-passkey-linear "$OUT/passkey-model-ruler"
dirs=("$OUT/full/ruler" "$OUT/from-passkey/ruler" "$OUT/passkey-model-ruler")
labels=("full attention: niah_single_1 alone" "models/infini-passkey-linear + niah_single_1" "models/infini-passkey-linear as it is")
if [ -f "$MIX/full/DONE" ]; then
  eval_one "$MIX/full" "$OUT/mix-full-ruler"
  dirs+=("$OUT/mix-full-ruler") && labels+=("full attention: the mixture")
fi
join() { local IFS=,; echo "$*"; }
"$LONGCTX" compare --ruler "$(join "${dirs[@]}")" --labels "$(join "${labels[@]}")"
"$LONGCTX" compare --runs "$OUT/full,$OUT/from-passkey" --labels "full attention from scratch,from models/infini-passkey-linear" \
  --metric answer_loss --title "niah_single_1 alone: answer loss (nats per answer token)" --out "$OUT/answer-loss.svg"
