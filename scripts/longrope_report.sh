#!/usr/bin/env bash
# Tables, plots and the passkey check of the RoPE-scaling experiment, from what
# scripts/longrope.sh left in OUT (default runs/longrope):
#   OUT/report/no-finetune.md, finetuned.md   bits per byte, method x multiple of W
#   OUT/report/no-finetune.svg, finetuned.svg the same as curves
#   OUT/report/passkey-*/                     passkey by length for the methods named in PASSKEY
#   scripts/longrope_report.sh [OUT=runs/longrope]
set -euo pipefail
cd "$(dirname "$0")/.."
LONGCTX=${LONGCTX:-build/longctx}
OUT=${1:-runs/longrope}
BASE=${BASE:-models/transformer-tiny}
MULTS="1 2 4 8 16 32"
W=$(grep -o '"seq_len": *[0-9]*' "$BASE/config.json" | head -1 | grep -o '[0-9]*$')
mkdir -p "$OUT/report"

bpb() { grep -o '"bits_per_byte": *[0-9.]*' "$1" | head -1 | grep -o '[0-9.]*$'; }
table() {  # table METHOD... : one row per method, one column per multiple of W
  printf '| method |'; for m in $MULTS; do printf ' %sx (%s) |' "$m" $((m * W)); done; echo
  printf '|---|'; for m in $MULTS; do printf -- '---|'; done; echo
  for name in "$@"; do
    printf '| %s |' "$name"
    for m in $MULTS; do
      f="$OUT/eval/$name-$m.json"
      if [ -f "$f" ]; then printf ' %.4f |' "$(bpb "$f")"; else printf ' — |'; fi
    done
    echo
  done
}
series() {  # series METHOD: the method's files joined by + (one per length)
  local s=
  for m in $MULTS; do [ -f "$OUT/eval/$1-$m.json" ] && s="$s${s:+ + }$OUT/eval/$1-$m.json"; done
  echo "${s// /}"
}
plot() {  # plot TITLE OUTFILE METHOD...
  local title=$1 file=$2
  shift 2
  local files= labels=
  for n in "$@"; do files="$files${files:+,}$(series "$n")"; labels="$labels${labels:+,}$n"; done
  $LONGCTX compare --ppl "$files" --labels "$labels" --title "$title" --out "$file" >/dev/null
}

table none pi ntk yarn longrope | tee "$OUT/report/no-finetune.md"
echo
table ft-none ft-pi ft-ntk ft-yarn ft-longrope ft-longrope-short | tee "$OUT/report/finetuned.md"
plot "Held-out bits per byte by context, no fine-tuning (trained at $W)" "$OUT/report/no-finetune.svg" none pi ntk yarn longrope
plot "Held-out bits per byte by context, after the same fine-tune at $((8 * W))" "$OUT/report/finetuned.svg" \
  ft-none ft-pi ft-ntk ft-yarn ft-longrope ft-longrope-short

# Passkey by length (2x..32x W: the passkey prompt needs ~250 byte tokens) for the methods
# named in PASSKEY ("name=model_dir ..."), depths 0/50/100.
for entry in ${PASSKEY:-}; do
  name=${entry%%=*} dir=${entry#*=}
  [ -f "$OUT/report/passkey-$name/summary.json" ] && continue
  $LONGCTX eval passkey --model "$dir" --lengths "$((2 * W)),$((4 * W)),$((8 * W)),$((16 * W)),$((32 * W))" \
    --depths 0,50,100 --samples "${PASSKEY_SAMPLES:-10}" --seed "${PASSKEY_SEED:-5}" --out "$OUT/report/passkey-$name"
done
