#!/usr/bin/env bash
# The RoPE-scaling experiment of docs/RESULTS.md (issue 8), on models/transformer-tiny
# (trained at W = 128 tokens):
#   1. LongRoPE's search on the base model at 2x, 4x, 8x, 16x and 32x W (fitness: the Brown
#      corpus, never the held-out addresses or the books);
#   2. bits per byte on the held-out addresses at 1x..32x W without fine-tuning: no scaling,
#      PI, NTK, YaRN (each at the scale of the length read) and LongRoPE (factors searched for
#      that length);
#   3. the same short fine-tune for every method: FT_STEPS steps at 8x W with the method's 8x
#      scaling, from the base weights, same data, seed and schedule;
#   4. the fine-tuned models read at 1x..8x with their own scaling and, further, extended
#      without more fine-tuning: PI and YaRN at the scale of the length, NTK dynamic, LongRoPE
#      searched again from its fine-tuned model at 16x and 32x (the paper's progressive path);
#   5. short-context recovery: the short factors searched at W for the fine-tuned LongRoPE
#      model, picked by length at inference (Hugging Face / Phi-3 semantics);
# scripts/longrope_report.sh then writes the tables and plots. Every step skips what is
# already done, so the script resumes.
#   scripts/longrope.sh [OUT=runs/longrope]
set -euo pipefail
cd "$(dirname "$0")/.."
LONGCTX=${LONGCTX:-build/longctx}
BASE=${BASE:-models/transformer-tiny}
OUT=${1:-runs/longrope}
FT_STEPS=${FT_STEPS:-150}
FT_MULT=8
MULTS="1 2 4 8 16 32"
MAX_BYTES=${MAX_BYTES:-100000}
# Search budget per target multiple: population, iterations, mutations (= crossovers) per
# iteration, fitness windows. The paper's is 64, 40, 16, 5; a candidate at 32x W costs 4-7 s on
# one thread here, so the longer targets get smaller budgets (SEARCH_FULL=1: the paper's for all).
budget() {
  if [ "${SEARCH_FULL:-0}" = 1 ]; then echo "64 40 16 5"; return; fi
  case $1 in 2|4) echo "64 40 16 5" ;; 8) echo "32 20 8 5" ;; 16) echo "24 10 8 3" ;; *) echo "16 6 6 3" ;; esac
}
W=$(grep -o '"seq_len": *[0-9]*' "$BASE/config.json" | head -1 | grep -o '[0-9]*$')
mkdir -p "$OUT/eval" "$OUT/report"

search() {  # search FROM OUTDIR MULT [extra args]
  local from=$1 dir=$2 m=$3
  shift 3
  [ -f "$dir/search_result.json" ] && return
  read -r pop its kids samples <<<"$(budget "$m")"
  $LONGCTX search longrope --model "$from" --out "$dir" --target-length $((m * W)) --population "$pop" \
    --parents $((pop / 2)) --iterations "$its" --mutations "$kids" --crossovers "$kids" --samples "$samples" --seed 0 "$@"
}
ev() {  # ev NAME MODEL_DIR MULT [--set ...]: bits per byte, each window read in one call
  local name=$1 dir=$2 m=$3
  shift 3
  local L=$((m * W)) f="$OUT/eval/$name-$m.json"
  [ -f "$f" ] && return
  $LONGCTX eval ppl --model "$dir" --data val --max-bytes "$MAX_BYTES" --context "$L" --chunk "$L" \
    --json "$f.tmp" "$@" >/dev/null
  mv "$f.tmp" "$f"
}
pi() { echo "model.rope_scaling={\"rope_type\": \"linear\", \"factor\": $1}"; }
ntk() { echo "model.rope_scaling={\"rope_type\": \"dynamic\", \"factor\": 1.0, \"original_max_position_embeddings\": $W}"; }
yarn() { echo "model.rope_scaling={\"rope_type\": \"yarn\", \"factor\": $1, \"original_max_position_embeddings\": $W}"; }

# 1. Searches on the base model.
for m in 2 4 8 16 32; do search "$BASE" "$OUT/search-base-x$m" "$m"; done

# 2. Without fine-tuning.
for m in $MULTS; do
  ev none "$BASE" "$m"
  s=$((m > 1 ? m : 2))  # at 1x: the 2x version of each method (what an extended model reads short text with)
  ev pi "$BASE" "$m" --set "$(pi $s)"
  ev ntk "$BASE" "$m" --set "$(ntk)"
  ev yarn "$BASE" "$m" --set "$(yarn $s)"
  ev longrope "$OUT/search-base-x$s" "$m"
done

# 3. The same short fine-tune for every method, at 8x W.
L8=$((FT_MULT * W))
ft() {  # ft NAME CONFIG [--set ...]: from the base weights, the base's data, seed and optimizer
  local name=$1 config=$2
  shift 2
  local dir=$OUT/ft-$name
  [ -f "$dir/done" ] && return
  local r=
  if ls "$dir"/checkpoint-* >/dev/null 2>&1; then r=--resume; fi
  $LONGCTX train --config "$config" --out "$dir" $r --steps "$FT_STEPS" \
    --set "train.init_from=\"$BASE\"" --set data.seq_len=$L8 --set train.batch_size=4 --set train.lr=1e-3 \
    --set train.warmup_steps=10 --set train.min_lr_ratio=0.1 --set train.eval_every=50 --set train.eval_batches=8 \
    --set train.checkpoint_every=50 "$@"
  touch "$dir/done"
}
ft none "$BASE/config.json"
ft pi "$BASE/config.json" --set "$(pi $FT_MULT)"
ft ntk "$BASE/config.json" --set "$(ntk)"
ft yarn "$BASE/config.json" --set "$(yarn $FT_MULT)"
ft longrope "$OUT/search-base-x$FT_MULT/config.json"  # the searched 8x factors, max_position_embeddings 8W

# 4. The fine-tuned models, and beyond 8x without more fine-tuning.
for m in 16 32; do search "$OUT/ft-longrope" "$OUT/search-ft-x$m" "$m"; done
for m in $MULTS; do
  ev ft-none "$OUT/ft-none" "$m"
  ev ft-ntk "$OUT/ft-ntk" "$m"
  if [ "$m" -le "$FT_MULT" ]; then
    ev ft-pi "$OUT/ft-pi" "$m"
    ev ft-yarn "$OUT/ft-yarn" "$m"
    ev ft-longrope "$OUT/ft-longrope" "$m"
  else
    ev ft-pi "$OUT/ft-pi" "$m" --set "$(pi "$m")"
    ev ft-yarn "$OUT/ft-yarn" "$m" --set "$(yarn "$m")"
    ev ft-longrope "$OUT/search-ft-x$m" "$m"
  fi
done

# 5. Short-context recovery: short factors for the fine-tuned LongRoPE model. 64 windows of W
#    (8K tokens): with the paper's 5 windows (640 tokens at W = 128) the search fitted the
#    samples' noise and read the held-out text worse than its own seed did.
[ -f "$OUT/search-ft-short/search_result.json" ] ||
  $LONGCTX search longrope --model "$OUT/ft-longrope" --out "$OUT/search-ft-short" --short --seed 0 --samples 64
# (Its long factors are the 8x ones: beyond 8x the progressive searches above apply instead.)
for m in $MULTS; do if [ "$m" -le "$FT_MULT" ]; then ev ft-longrope-short "$OUT/search-ft-short" "$m"; fi; done
