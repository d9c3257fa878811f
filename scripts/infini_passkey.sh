#!/usr/bin/env bash
# Infini-attention passkey recipe (issue 4), with its same-budget comparisons.
#
#   stage 1  configs/infini-passkey.json: rows of 512 tokens, one 512-token segment (so the
#            memory is never read and its gates are frozen, lr_scale 0), short passkey prompts
#            packed into the rows, loss on the answers and the text only: the model learns to
#            copy the key with local attention.
#   stage 2  configs/infini-passkey-stage2.json from stage 1's weights: 128-token segments,
#            prompts of 128-500 tokens, so the key usually sits in an earlier segment than the
#            question and must come back through the memory. Three arms, the same steps,
#            tokens, data and seed:
#              delta           the recipe's model (delta rule)
#              linear          the same with the linear update rule
#              sliding-window  a sliding-window transformer (window 128) of the same weights
#                              minus the gates (train.init_ignore)
#   eval     passkey for every arm at 300..4000 tokens (and 256..4096), every depth, 20 samples
#            per cell; the linear arm (the best here, checked in) also at 4K, 32K, 256K and 1M
#            tokens (LONG_SAMPLES per cell: 20 take hours at 1M on 2 cores; RESULTS used 4 and 2).
#
# Every step resumes or is skipped when its output is complete, so the script can be rerun
# after an interruption. Environment: LONGCTX (binary), OUT (folder), THREADS (per arm; the
# three arms run side by side), PASSKEY_SEED, LONG_SAMPLES (per cell at 4K..1M), LONG_LENGTHS,
# LONG_ARM.
set -euo pipefail
LONGCTX=${LONGCTX:-build/longctx}
OUT=${OUT:-runs/infini-passkey}
THREADS=${THREADS:-1}
SEED=${PASSKEY_SEED:-1}
LONG_SAMPLES=${LONG_SAMPLES:-20}
LONG_LENGTHS=${LONG_LENGTHS:-4000,32000,256000,1000000}
mkdir -p "$OUT"

# train NAME ARGS...: trains into $OUT/NAME unless it has finished; resumes a killed run.
. "$(dirname "$0")/train_arm.sh"

# Stage 1 uses both threads: it runs alone.
THREADS=$((THREADS * 2)) train_arm "$OUT/stage1" --config configs/infini-passkey.json

STAGE2=(--config configs/infini-passkey-stage2.json --set "train.init_from=$OUT/stage1")
train_arm "$OUT/delta" "${STAGE2[@]}" &
p1=$!
train_arm "$OUT/linear" "${STAGE2[@]}" --set model.mixer.update=linear &
p2=$!
train_arm "$OUT/sliding-window" "${STAGE2[@]}" --set 'model.mixer={"type":"sliding_window","window":128}' \
  --set 'train.init_ignore=["memory_gate"]' &
p3=$!
wait $p1 $p2 $p3

# Lengths that are not multiples of the 128-token segment (a prompt ending on a segment boundary
# leaves the answer's first segment without the question: RESULTS reports both), and the same
# at powers of two.
for arm in delta linear sliding-window; do
  for set in "passkey-short 300,500,1000,2000,4000" "passkey-aligned 256,512,1024,2048,4096"; do
    read -r name lengths <<<"$set"
    if [ ! -f "$OUT/$arm/$name/summary.json" ]; then
      "$LONGCTX" --threads $((THREADS * 2)) eval passkey --model "$OUT/$arm" --lengths "$lengths" \
        --depths 0,25,50,75,100 --samples 20 --seed "$SEED" --out "$OUT/$arm/$name"
    fi
  done
done
# The long evaluation of the arm checked in as models/infini-passkey-linear (LONG_ARM).
LONG_ARM=${LONG_ARM:-linear}
if [ ! -f "$OUT/$LONG_ARM/passkey/summary.json" ]; then
  "$LONGCTX" --threads $((THREADS * 2)) eval passkey --model "$OUT/$LONG_ARM" --lengths "$LONG_LENGTHS" \
    --depths 0,25,50,75,100 --samples "$LONG_SAMPLES" --seed "$SEED" --out "$OUT/$LONG_ARM/passkey"
fi
echo "passkey: $OUT/{delta,linear,sliding-window}/passkey-{short,aligned} and $OUT/$LONG_ARM/passkey"
echo "check in: $LONGCTX export --model $OUT/$LONG_ARM --out models/infini-passkey-linear --dtype F16"
