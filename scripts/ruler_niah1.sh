#!/usr/bin/env bash
# One task with dense supervision, the diagnostic beside the zoo's mixture (issue 10; docs/RESULTS.md
# "RULER and lost in the middle over the zoo"): can the mixture's model (full attention, 0.87M
# parameters, byte tokens) learn RULER's niah_single_1 when every row teaches it? 800 steps of 16
# rows x 768 tokens (9.8M tokens), 90% of rows one niah_single_1 sample of 512-768 tokens, the
# answer weighted x20 (the passkey recipe's weight), seed 0. Then RULER niah_single_1 at 768, 1536
# and 4096 tokens, SAMPLES per length, seed 0, for this model and for the mixture's full-attention
# arm (runs/ruler-mix/full, if trained) on the same samples.
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
eval_one() {
  local model=$1 out=$2
  if [ ! -f "$out/DONE-$SAMPLES" ]; then
    echo "[$model] RULER niah_single_1 at 768,1536,4096 (log: $out.log)"
    "$LONGCTX" --threads "$THREADS" ruler --model "$model" --tasks niah_single_1 --lengths 768,1536,4096 \
      --samples "$SAMPLES" --seed 0 --out "$out" >"$out.log" 2>&1
    touch "$out/DONE-$SAMPLES"
  fi
  tail -4 "$out.log"
}
eval_one "$OUT/full" "$OUT/full/ruler"
[ -f "$MIX/full/DONE" ] && eval_one "$MIX/full" "$OUT/mix-full-ruler"
"$LONGCTX" compare --runs "$OUT/full" --metric answer_loss | tail -5
