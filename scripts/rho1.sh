#!/usr/bin/env bash
# The RHO-1 experiment (docs/RESULTS.md): a reference model trained on 40 clean held-out
# addresses, then the same student trained on the noisy SOTU + Brown stream (50% noise bytes)
# four ways with equal seeds, data order and seen tokens: ordinary training, selective at 60%
# and 70% (excess loss against the reference), and a control keeping a random 60%. Then the
# same baseline/selective pair for MEGALODON. Every run resumes if interrupted.
#   scripts/rho1.sh [OUT=runs]        (STEPS, MEGA_STEPS override the budgets)
set -euo pipefail
cd "$(dirname "$0")/.."
LONGCTX=${LONGCTX:-build/longctx}
OUT=${1:-runs}
STEPS=${STEPS:-400}
MEGA_STEPS=${MEGA_STEPS:-250}
REF=$OUT/rho1-reference
MEGA_MODEL='{"d_model": 128, "n_layers": 4, "n_heads": 1, "d_ff": 192, "init_std": 0.0884, "mixer": {"type": "megalodon", "z_dim": 32, "v_dim": 256, "chunk": 256, "groups": 16, "ndim": 16}}'

run() {  # run NAME CONFIG [--set ...]
  local name=$1 config=$2
  shift 2
  if [ -f "$OUT/$name/done" ]; then return; fi
  local r=
  if ls "$OUT/$name"/checkpoint-* >/dev/null 2>&1; then r=--resume; fi
  $LONGCTX train --config "$config" --out "$OUT/$name" $r "$@"
  touch "$OUT/$name/done"
}

run rho1-reference configs/rho1-reference.json
run rho1-baseline configs/rho1-student.json --steps "$STEPS"
# Selective at 60% reads the reference's losses from a cache computed once (shared with the
# MEGALODON run, same data and batches); at 70% it computes them on the fly each step, so the
# two runs also measure which is faster.
run rho1-slm60 configs/rho1-student.json --steps "$STEPS" \
  --set "train.selective={\"reference\": \"$REF\", \"keep\": 0.6, \"cache\": \"$OUT/rho1-reference-losses.safetensors\"}"
run rho1-slm70 configs/rho1-student.json --steps "$STEPS" \
  --set "train.selective={\"reference\": \"$REF\", \"keep\": 0.7}"
run rho1-random60 configs/rho1-student.json --steps "$STEPS" \
  --set 'train.selective={"select": "random", "keep": 0.6}'
run rho1-mega-baseline configs/rho1-student.json --steps "$MEGA_STEPS" --set "model=$MEGA_MODEL"
run rho1-mega-slm60 configs/rho1-student.json --steps "$MEGA_STEPS" --set "model=$MEGA_MODEL" \
  --set "train.selective={\"reference\": \"$REF\", \"keep\": 0.6, \"cache\": \"$OUT/rho1-reference-losses-mega.safetensors\"}"

mkdir -p "$OUT/rho1-report"
$LONGCTX compare --runs "$OUT/rho1-baseline,$OUT/rho1-slm60,$OUT/rho1-slm70,$OUT/rho1-random60" \
  --labels "baseline,selective 60%,selective 70%,random 60%" --metric val_bpb \
  --title "Held-out SOTU bits per byte (transformer 0.87M, noisy stream)" --out "$OUT/rho1-report/transformer.svg" |
  tee "$OUT/rho1-report/transformer.md"
$LONGCTX compare --runs "$OUT/rho1-mega-baseline,$OUT/rho1-mega-slm60" --labels "MEGALODON baseline,MEGALODON selective 60%" \
  --metric val_bpb --title "Held-out SOTU bits per byte (MEGALODON 0.88M, noisy stream)" --out "$OUT/rho1-report/megalodon.svg" |
  tee "$OUT/rho1-report/megalodon.md"
