#!/usr/bin/env bash
# TransformerFAM vs block sliding window attention on the passkey budget (issue 6).
#
# Every arm starts from the Infini-attention recipe's stage 1 (scripts/infini_passkey.sh: a
# model that copies the key with local attention; trained here first if missing) and then
# spends the same stage-2 budget as the Infini-attention arms (configs/*-tiny.json: 1000 steps,
# 16 rows of 512 tokens, prompts of 128-500 tokens, seed 0), blocks of 128 tokens:
#   fam-m0    FAM, 16 memory tokens, no memory blocks (the paper's passkey setting)
#   fam-m1    FAM with one memory block
#   bswa-m1   BSWA with one memory block
#   bswa-m3   BSWA with three
# Then passkey for every arm at 300..4000 tokens (off the 128-token block grid) and for fam-m0 at 4K..1M, and bits per byte
# on Moby Dick read whole. Resumes; skips what is complete. Environment: LONGCTX, OUT,
# INFINI_OUT (where stage 1 is), THREADS (per arm; two arms at a time), PASSKEY_SEED,
# LONG_SAMPLES, LONG_LENGTHS.
set -euo pipefail
LONGCTX=${LONGCTX:-build/longctx}
OUT=${OUT:-runs/fam-passkey}
INFINI_OUT=${INFINI_OUT:-runs/infini-passkey}
THREADS=${THREADS:-1}
SEED=${PASSKEY_SEED:-1}
LONG_SAMPLES=${LONG_SAMPLES:-2}
LONG_LENGTHS=${LONG_LENGTHS:-4000,32000,256000,1000000}
mkdir -p "$OUT" "$INFINI_OUT"

. "$(dirname "$0")/train_arm.sh"

THREADS=$((THREADS * 2)) train_arm "$INFINI_OUT/stage1" --config configs/infini-passkey.json
INIT=(--set "train.init_from=$INFINI_OUT/stage1")
train_arm "$OUT/fam-m0" --config configs/fam-tiny.json "${INIT[@]}" &
p1=$!
train_arm "$OUT/bswa-m1" --config configs/bswa-tiny.json "${INIT[@]}" &
p2=$!
wait $p1 $p2
train_arm "$OUT/fam-m1" --config configs/fam-tiny.json "${INIT[@]}" --set model.mixer.memory_blocks=1 &
p1=$!
train_arm "$OUT/bswa-m3" --config configs/bswa-tiny.json "${INIT[@]}" --set model.mixer.memory_blocks=3 &
p2=$!
wait $p1 $p2

for arm in fam-m0 fam-m1 bswa-m1 bswa-m3; do
  if [ ! -f "$OUT/$arm/passkey-short/summary.json" ]; then
    "$LONGCTX" --threads $((THREADS * 2)) eval passkey --model "$OUT/$arm" --lengths 300,500,1000,2000,4000 \
      --depths 0,25,50,75,100 --samples 20 --seed "$SEED" --out "$OUT/$arm/passkey-short"
  fi
  if [ ! -f "$OUT/$arm/moby-dick.json" ]; then
    "$LONGCTX" --threads $((THREADS * 2)) eval ppl --model "$OUT/$arm" --data moby-dick --context all \
      --json "$OUT/$arm/moby-dick.json.tmp" && mv "$OUT/$arm/moby-dick.json.tmp" "$OUT/$arm/moby-dick.json"
  fi
done
if [ ! -f "$OUT/fam-m0/passkey/summary.json" ]; then
  "$LONGCTX" --threads $((THREADS * 2)) eval passkey --model "$OUT/fam-m0" --lengths "$LONG_LENGTHS" \
    --depths 0,25,50,75,100 --samples "$LONG_SAMPLES" --seed "$SEED" --out "$OUT/fam-m0/passkey"
fi
echo "passkey: $OUT/*/passkey-short, $OUT/fam-m0/passkey; Moby Dick: $OUT/*/moby-dick.json"
