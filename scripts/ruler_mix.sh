#!/usr/bin/env bash
# Every mechanism of the zoo trained on RULER's task mixture with the same budget, then measured
# with RULER (issue 10; docs/RESULTS.md "RULER and lost in the middle over the zoo").
#
# Arms (configs/ruler-mix-*.json): the same 4-layer, D 128 model (0.87M parameters; MEGALODON's
# own shape at the same count), byte tokens, the SOTU split of every recipe, seed 0; 600 steps
# of 4 rows x 1536 tokens (3.7M tokens), 75% of rows a RULER sample of 512-1536 tokens with its
# reference answer (answer tokens weigh 5, the prompt 0), 25% plain text. Activation Beacon is
# trained from scratch like the others (no base model: that would be a larger budget).
#   full      full attention (the baseline: its KV grows with the input)
#   swa       sliding window 512 + 4 sinks
#   infini    Infini-attention, segments of 256
#   megalodon MEGALODON, chunks of 256
#   fam       TransformerFAM, blocks of 256, one memory block, 16 FAM tokens
#   beacon    Activation Beacon, windows of 256, ratio by length
# Then RULER on every task that runs offline (no QA files: qa_1/qa_2 need --squad/--hotpotqa)
# at the trained length (1536) and
# at 4K..128K (full attention to 16K: its O(L^2) prefill reads about 190 tokens/s at 64K here, so
# 32K-128K would take hours more), SAMPLES
# per task and length, seed 0; RULER at 1M tokens for the bounded arms (LONG_TASKS, 1 sample;
# not full attention or Activation Beacon, whose state grows);
# lost in the middle (kv 75/140/300 pairs, LITM_SAMPLES per gold position; full attention to
# 140); streaming speed and state bytes (bench_stream, its own model at 16K and 128K, beside full
# attention at 16K in the same run); then the tables and plots (scripts/ruler_report.sh).
# Resumes; skips what is complete. Environment: LONGCTX, BENCH, OUT, THREADS (per job; two jobs at
# a time), SAMPLES, LENGTHS, FULL_LENGTHS, LONG_TASKS, LITM_SAMPLES, ARMS.
set -euo pipefail
LONGCTX=${LONGCTX:-build/longctx}
OUT=${OUT:-runs/ruler-mix}
THREADS=${THREADS:-1}
SAMPLES=${SAMPLES:-2}
LENGTHS=${LENGTHS:-1536,4096,8192,16384,32768,65536,131072}
FULL_LENGTHS=${FULL_LENGTHS:-1536,4096,8192,16384}
LONG_TASKS=${LONG_TASKS:-niah_single_1,vt}
LITM_SAMPLES=${LITM_SAMPLES:-2}
BENCH=${BENCH:-build/bench_stream}
ARMS=${ARMS:-full swa infini megalodon fam beacon}
mkdir -p "$OUT"
. "$(dirname "$0")/train_arm.sh"

# Two jobs at a time, each on $THREADS threads.
run_pairs() {
  local fn=$1
  shift
  local arms=("$@") i
  for ((i = 0; i < ${#arms[@]}; i += 2)); do
    $fn "${arms[i]}" &
    local p1=$! p2=
    if ((i + 1 < ${#arms[@]})); then
      $fn "${arms[i + 1]}" &
      p2=$!
    fi
    wait $p1 ${p2:+$p2}
  done
}

train_one() { train_arm "$OUT/$1" --config "configs/ruler-mix-$1.json"; }

ruler_one() {
  local arm=$1 lengths=$LENGTHS
  [ "$arm" = full ] && lengths=$FULL_LENGTHS
  if [ ! -f "$OUT/$arm/ruler/DONE-$SAMPLES-$lengths" ]; then
    echo "[$arm] RULER at $lengths (log: $OUT/$arm/ruler.log)"
    "$LONGCTX" --threads "$THREADS" ruler --model "$OUT/$arm" --tasks all --lengths "$lengths" \
      --samples "$SAMPLES" --seed 0 --out "$OUT/$arm/ruler" >"$OUT/$arm/ruler.log" 2>&1
    touch "$OUT/$arm/ruler/DONE-$SAMPLES-$lengths"
  fi
}

ruler_long() {
  local arm=$1
  # Bounded state only: full attention's KV grows with L, and so do the beacons (L / ratio).
  if [ "$arm" = full ] || [ "$arm" = beacon ]; then return; fi
  if [ ! -f "$OUT/$arm/ruler-1m/DONE" ]; then
    echo "[$arm] RULER at 1M: $LONG_TASKS (log: $OUT/$arm/ruler-1m.log)"
    "$LONGCTX" --threads "$THREADS" ruler --model "$OUT/$arm" --tasks "$LONG_TASKS" --lengths 1048576 \
      --samples 1 --seed 0 --out "$OUT/$arm/ruler-1m" >"$OUT/$arm/ruler-1m.log" 2>&1
    touch "$OUT/$arm/ruler-1m/DONE"
  fi
}

litm_one() {
  local arm=$1 sizes=75,140,300
  [ "$arm" = full ] && sizes=75,140
  if [ ! -f "$OUT/$arm/litm/DONE" ]; then
    echo "[$arm] lost in the middle, kv $sizes (log: $OUT/$arm/litm.log)"
    "$LONGCTX" --threads "$THREADS" litm --model "$OUT/$arm" --setup kv --sizes "$sizes" \
      --samples "$LITM_SAMPLES" --seed 0 --out "$OUT/$arm/litm" >"$OUT/$arm/litm.log" 2>&1
    touch "$OUT/$arm/litm/DONE"
  fi
}

bench_one() {
  local arm=$1 type
  type=$(sed -n 's/.*"type": "\([a-z_]*\)".*/\1/p' "configs/ruler-mix-$arm.json" | head -1)
  [ -f "$OUT/$arm/bench.txt" ] && return
  local lengths=16384,131072 mixers=$type
  # The ratio chosen by length at 128K (its state grows with L / ratio: 1M is in BENCHMARKS, issue 7).
  [ "$arm" = beacon ] && mixers=activation_beacon@128
  [ "$arm" = full ] && lengths=16384
  [ "$arm" != full ] && mixers=$mixers,full_attention
  echo "[$arm] bench_stream $mixers at $lengths"
  "$BENCH" --threads "$THREADS" --model "$OUT/$arm" --mixers "$mixers" --lengths "$lengths" --full-max 16384 \
    >"$OUT/$arm/bench.txt.tmp" 2>&1 && mv "$OUT/$arm/bench.txt.tmp" "$OUT/$arm/bench.txt"
}

read -r -a arms <<<"$ARMS"
run_pairs train_one "${arms[@]}"
run_pairs ruler_one "${arms[@]}"
run_pairs litm_one "${arms[@]}"
run_pairs ruler_long "${arms[@]}"
for a in "${arms[@]}"; do bench_one "$a"; done  # one at a time: speed figures
OUT="$OUT" LONGCTX="$LONGCTX" "$(dirname "$0")/ruler_report.sh"
