#!/usr/bin/env bash
# The tables and plots of docs/RESULTS.md "RULER and lost in the middle over the zoo" from scripts/ruler_mix.sh's runs:
# RULER averages per length with effective lengths (and the model x length heatmap), RULER at 1M
# for the bounded arms, lost-in-the-middle U-curves, and each arm's per-task heatmap copied to
# docs/img. Usage: OUT=runs/ruler-mix scripts/ruler_report.sh
set -euo pipefail
LONGCTX=${LONGCTX:-build/longctx}
OUT=${OUT:-runs/ruler-mix}
IMG=${IMG:-docs/img}
ARMS=${ARMS:-full swa infini megalodon fam beacon}
declare -A NAME=([full]="full attention" [swa]="sliding window 512" [infini]="Infini-attention" \
  [megalodon]="MEGALODON" [fam]="TransformerFAM" [beacon]="Activation Beacon")
mkdir -p "$IMG"
dirs=() labels=() long=() long_labels=() litm=() litm_labels=()
for a in $ARMS; do
  [ -f "$OUT/$a/ruler/summary.json" ] && dirs+=("$OUT/$a/ruler") && labels+=("${NAME[$a]}")
  [ -f "$OUT/$a/ruler-1m/summary.json" ] && long+=("$OUT/$a/ruler-1m") && long_labels+=("${NAME[$a]}")
  [ -f "$OUT/$a/litm/summary.json" ] && litm+=("$OUT/$a/litm") && litm_labels+=("${NAME[$a]}")
  [ -f "$OUT/$a/ruler/heatmap.svg" ] && cp "$OUT/$a/ruler/heatmap.svg" "$IMG/ruler-mix-$a.svg"
done
join() { local IFS=,; echo "$*"; }
echo "## RULER, average over tasks"
"$LONGCTX" compare --ruler "$(join "${dirs[@]}")" --labels "$(join "${labels[@]}")" \
  --title "RULER over the zoo (trained on the task mixture at <= 1.5K tokens)" --out "$IMG/ruler-mix.svg"
if [ ${#long[@]} -gt 0 ]; then
  echo "## RULER at 1M"
  "$LONGCTX" compare --ruler "$(join "${long[@]}")" --labels "$(join "${long_labels[@]}")"
fi
if [ ${#litm[@]} -gt 0 ]; then
  for n in 75 140 300; do
    echo "## Lost in the middle (kv, $n pairs)"
    "$LONGCTX" compare --litm "$(join "${litm[@]}")" --labels "$(join "${litm_labels[@]}")" --size $n \
      --title "Lost in the middle, key-value retrieval over $n pairs: accuracy by the gold key's position" \
      --out "$IMG/litm-kv-$n.svg"
  done
fi
for a in $ARMS; do
  [ -f "$OUT/$a/bench.txt" ] && echo "## bench_stream: $a" && grep -E "^\|" "$OUT/$a/bench.txt" || true
done
echo "## The needle answers' form (scripts/ruler_forms.py)"
python3 "$(dirname "$0")/ruler_forms.py" "$OUT" "$(echo $ARMS | tr ' ' ',')" || true
