#!/usr/bin/env bash
# Chooses among checkpoints of a passkey run by retrieval on prompts none of the reported
# evaluations use (issue 20): every checkpoint is scored on SEEDS (default 1001 1002), with the
# key at the start of LENGTH tokens (default 32768, the hardest cell) and at depths 50 and 100 of
# SHORT tokens (default 4096), SAMPLES prompts per cell (default 8). Prints one line per
# checkpoint (correct / total per cell and overall) and names the best (ties: the later one).
#
#   scripts/passkey_select.sh RUN_DIR/checkpoint-20 RUN_DIR/checkpoint-40 ... > select.txt
#
# Environment: LONGCTX (build/longctx), THREADS (2), OUT (runs/passkey-select).
set -euo pipefail
LONGCTX=${LONGCTX:-build/longctx}
THREADS=${THREADS:-2}
SEEDS=${SEEDS:-"1001 1002"}
LENGTH=${LENGTH:-32768}
SHORT=${SHORT:-4096}
SAMPLES=${SAMPLES:-8}
OUT=${OUT:-runs/passkey-select}
mkdir -p "$OUT"
best="" best_n=-1
for ck in "$@"; do
  tag=$(echo "$ck" | tr '/' '_')
  long=0 short=0 total_long=0 total_short=0
  for s in $SEEDS; do
    d="$OUT/$tag-s$s"
    [ -f "$d/summary.json" ] || "$LONGCTX" --threads "$THREADS" eval passkey --model "$ck" --lengths "$LENGTH" --depths 0 \
      --samples "$SAMPLES" --seed "$s" --out "$d" > "$d.log" 2>&1
    long=$((long + $(grep -c '"correct":true' "$d/samples.jsonl" || true)))
    total_long=$((total_long + SAMPLES))
    d="$OUT/$tag-short-s$s"
    [ -f "$d/summary.json" ] || "$LONGCTX" --threads "$THREADS" eval passkey --model "$ck" --lengths "$SHORT" --depths 50,100 \
      --samples "$SAMPLES" --seed "$s" --out "$d" > "$d.log" 2>&1
    short=$((short + $(grep -c '"correct":true' "$d/samples.jsonl" || true)))
    total_short=$((total_short + 2 * SAMPLES))
  done
  n=$((long + short))
  echo "$ck: depth 0 at $LENGTH: $long/$total_long; depths 50,100 at $SHORT: $short/$total_short; all: $n/$((total_long + total_short))"
  if [ "$n" -ge "$best_n" ]; then best=$ck best_n=$n; fi
done
echo "best: $best ($best_n correct)"
