#!/usr/bin/env bash
# The RoPE-scaling experiment's evaluation (docs/RESULTS.md): bits per byte on the held-out
# addresses at 1x..32x the trained context W, for no scaling, PI (linear), NTK (HF "dynamic"
# with factor 1: base scaled for the length read), YaRN, and any searched LongRoPE folders given.
# Each window is read in one call (--chunk = context), as in the papers.
#   scripts/rope_scaling_eval.sh MODEL OUT [LONGROPE_DIR ...]
set -euo pipefail
LONGCTX=${LONGCTX:-build/longctx}
MODEL=$1
OUT=$2
shift 2
MULTS=${MULTS:-1 2 4 8 16 32}
MAX_BYTES=${MAX_BYTES:-100000}
W=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['data']['seq_len'])" "$MODEL/config.json" 2>/dev/null ||
    grep -o '"seq_len": *[0-9]*' "$MODEL/config.json" | grep -o '[0-9]*$')
mkdir -p "$OUT"
ev() {  # ev NAME MODEL_DIR LENGTH [--set ...]
  local name=$1 dir=$2 len=$3
  shift 3
  local f="$OUT/$name-$len.json"
  [ -f "$f" ] && return
  $LONGCTX eval ppl --model "$dir" --data val --max-bytes "$MAX_BYTES" --context "$len" --chunk "$len" --json "$f" "$@" >/dev/null
}
for m in $MULTS; do
  L=$((m * W))
  ev none "$MODEL" "$L"
  if [ "$m" -gt 1 ]; then
    ev pi "$MODEL" "$L" --set "model.rope_scaling={\"rope_type\": \"linear\", \"factor\": $m}"
    ev ntk "$MODEL" "$L" --set "model.rope_scaling={\"rope_type\": \"dynamic\", \"factor\": 1.0, \"original_max_position_embeddings\": $W}"
    ev yarn "$MODEL" "$L" --set "model.rope_scaling={\"rope_type\": \"yarn\", \"factor\": $m, \"original_max_position_embeddings\": $W}"
  fi
  for d in "$@"; do ev "longrope-$(basename "$d")" "$d" "$L"; done
done
# The table: one row per method, one column per multiple of W.
{
  printf '| method |'; for m in $MULTS; do printf ' %sx (%s) |' "$m" $((m * W)); done; echo
  printf '|---|'; for m in $MULTS; do printf -- '---|'; done; echo
  for name in none pi ntk yarn $(for d in "$@"; do echo "longrope-$(basename "$d")"; done); do
    printf '| %s |' "$name"
    for m in $MULTS; do
      f="$OUT/$name-$((m * W)).json"
      if [ -f "$f" ]; then printf ' %s |' "$(grep -o '"bits_per_byte": *[0-9.]*' "$f" | head -1 | grep -o '[0-9.]*$' | cut -c1-6)"
      else printf ' — |'; fi
    done
    echo
  done
} | tee "$OUT/table.md"
