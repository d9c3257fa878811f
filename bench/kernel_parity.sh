#!/bin/bash
# No accuracy change from the fused attention kernel: every checked-in model's held-out bits per
# byte with the fused kernel and with the previous implementation (--attention blocked), same
# binary, same data, one after the other. Prints one row per model and the largest difference.
#
#   bench/kernel_parity.sh [--max-bytes 65536] [--context 4096]
set -eu
cd "$(dirname "$0")/.."
MAX=${MAX_BYTES:-65536}
CTX=${CONTEXT:-4096}
echo "| model | mixer | fused bits/byte | blocked bits/byte | difference |"
echo "|---|---|---|---|---|"
worst=0
for m in models/*/; do
  m=${m%/}
  [ -f "$m/config.json" ] || continue
  mixer=$(python3 -c "import json;print(json.load(open('$m/config.json'))['model'].get('mixer',{}).get('type','?'))")
  bpb() {
    build/longctx --attention "$1" eval ppl --model "$m" --data val --context "$CTX" --max-bytes "$MAX" \
      --json /tmp/kernel_parity.json > /dev/null 2>&1
    python3 -c "import json;print(f\"{json.load(open('/tmp/kernel_parity.json'))['results'][0]['bits_per_byte']:.6f}\")"
  }
  a=$(bpb fused) b=$(bpb blocked)
  d=$(python3 -c "print(f'{abs($a-$b):.2e}')")
  worst=$(python3 -c "print(max($worst, abs($a-$b)))")
  echo "| $m | $mixer | $a | $b | $d |"
done
echo
echo "largest difference: $worst bits per byte"
