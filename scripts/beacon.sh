#!/usr/bin/env bash
# Activation Beacon on models/transformer-tiny-1k (issue 7; MECHANISMS.md section 7).
#
# 1. Trains the beacons of the frozen base (configs/beacon-tiny.json: windows of l = 256 tokens,
#    ratios 2..128 drawn per sequence, rows of 2W = 2048 tokens, seed 0) into $OUT/train.
# 2. Bits per byte on Moby Dick (never trained or tuned on), each window of C tokens read from a
#    fresh state, C = W (1024), 16W, 64W on the book's first $MAX_BYTES bytes, and the whole book:
#      base          the base model, full attention (positions past W are untrained at 16W)
#      sliding       the base with a sliding window of W (bounded, same weights)
#      pi, ntk       the base with RoPE position interpolation (x16) / dynamic NTK, at 16W
#      beacon-aN     beacons at ratio N (2..128); the ratio chosen by length (`"ratio": 0`: the
#                    smallest whose reach (1024 - 256) * ratio + 256 covers C) is 2 at W, 32 at
#                    16W and 128 at 64W and past, so those cells are the same runs
# 3. Passkey with the beacons at 1K..64K tokens (ratio by length).
# scripts/beacon_report.sh draws the plot from $OUT/eval.
# Resumes; skips what is complete. Environment: LONGCTX, OUT, BASE, THREADS, MAX_BYTES.
set -euo pipefail
LONGCTX=${LONGCTX:-build/longctx}
OUT=${OUT:-runs/beacon}
BASE=${BASE:-models/transformer-tiny-1k}
THREADS=${THREADS:-2}
MAX_BYTES=${MAX_BYTES:-262144}
W=1024
mkdir -p "$OUT/eval"

. "$(dirname "$0")/train_arm.sh"
train_arm "$OUT/train" --config configs/beacon-tiny.json --set "train.init_from=\"$BASE\""
MODEL=$OUT/train

ev() {  # ev NAME MODEL_DIR CONTEXT [--set ...]
  local name=$1 dir=$2 ctx=$3
  shift 3
  local f="$OUT/eval/$name-$ctx.json"
  [ -f "$f" ] && return
  local limit=(--max-bytes "$MAX_BYTES")
  [ "$ctx" = all ] && limit=()
  echo "[eval] $name at $ctx"
  "$LONGCTX" --threads "$THREADS" eval ppl --model "$dir" --data moby-dick "${limit[@]}" --context "$ctx" \
    --chunk 4096 --json "$f.tmp" "$@" >/dev/null
  mv "$f.tmp" "$f"
}
sliding="model.mixer={\"type\": \"sliding_window\", \"window\": $W}"
pi="model.rope_scaling={\"rope_type\": \"linear\", \"factor\": 16}"
ntk="model.rope_scaling={\"rope_type\": \"dynamic\", \"factor\": 1.0, \"original_max_position_embeddings\": $W}"

ev base "$BASE" $W
for c in $((16 * W)) $((64 * W)); do ev sliding "$BASE" $c --set "$sliding"; done
for a in 128 32 2 4 8 16; do
  for c in $W $((16 * W)) $((64 * W)); do ev beacon-a$a "$MODEL" $c --set model.mixer.ratio=$a; done
done
ev base "$BASE" $((16 * W))
ev pi "$BASE" $((16 * W)) --set "$pi"
ev ntk "$BASE" $((16 * W)) --set "$ntk"
ev beacon-a128 "$MODEL" all --set model.mixer.ratio=128
ev sliding "$BASE" all --set "$sliding"

if [ ! -f "$OUT/passkey/summary.json" ]; then
  "$LONGCTX" --threads "$THREADS" eval passkey --model "$MODEL" --lengths 1000,4000,16000 \
    --depths 0,50,100 --samples 2 --seed 1 --out "$OUT/passkey"
fi
echo "bits per byte: $OUT/eval/*.json; passkey: $OUT/passkey"
