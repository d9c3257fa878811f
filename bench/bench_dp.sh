#!/usr/bin/env bash
# Data-parallel training throughput (issue 25): `longctx train` with 1 and with 2 ranks of this
# machine (c10d over Gloo on loopback, the cores split between the ranks), the same config and
# global batch, and the all-reduce time per step that the backward pass did not hide.
#   bench/bench_dp.sh [CONFIG] [STEPS] [NPROCS...]     (defaults: configs/bench-d256.json 12 "1 2")
# Prints a markdown table; the first two steps (warm-up) are left out of the figures.
set -euo pipefail
LONGCTX=${LONGCTX:-build/longctx}
CONFIG=${1:-configs/bench-d256.json}
STEPS=${2:-12}
shift 2 2>/dev/null || shift $#
NPROCS=${*:-1 2}
OUT=$(mktemp -d /tmp/bench_dp.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
echo "| ranks | threads per rank | training tokens/s | all-reduce wait per step (s) | step time (s) | final loss |"
echo "|---|---|---|---|---|---|"
for n in $NPROCS; do
  "$LONGCTX" train --config "$CONFIG" --nproc "$n" --out "$OUT/n$n" --set train.steps="$STEPS" --set train.log_every=1 \
    --set train.eval_every=0 --set train.checkpoint_every=0 --set train.warmup_steps=2 --set data.val_docs=2 \
    --set train.eval_batches=1 >/dev/null 2>"$OUT/n$n.err" || { cat "$OUT/n$n.err"; exit 1; }
  python3 - "$OUT/n$n/log.jsonl" "$n" "$(nproc)" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
n, cores = int(sys.argv[2]), int(sys.argv[3])
steady = rows[2:]
dt = steady[-1]["elapsed_s"] - rows[1]["elapsed_s"]
toks = steady[-1]["tokens"] - rows[1]["tokens"]
wait = sum(r.get("allreduce_wait_s", 0.0) for r in steady) / len(steady)
print("| %d | %d | %.0f | %s | %.2f | %.4f |" % (n, max(1, cores // n), toks / dt,
      "%.3f" % wait if n > 1 else "-", dt / len(steady), rows[-1]["loss"]))
PY
done
