#!/usr/bin/env bash
# The MEGALODON experiment's evaluations (docs/RESULTS.md): validation curves of both runs,
# and bits per byte on Moby Dick (never trained on) as the context grows, for MEGALODON
# (streamed, whole book included) and for the transformer truncated to its training length and
# with its window slid over the book.
#   scripts/megalodon_eval.sh [MEGALODON_MODEL] [TRANSFORMER_MODEL] [OUT]
set -euo pipefail
LONGCTX=${LONGCTX:-build/longctx}
MEGA=${1:-runs/megalodon-tiny}
TRF=${2:-runs/transformer-tiny-1k}
OUT=${3:-runs/megalodon-eval}
CONTEXTS=${CONTEXTS:-1024,4096,16384,65536,all}
mkdir -p "$OUT"
if [ -f "$MEGA/log.jsonl" ] && [ -f "$TRF/log.jsonl" ]; then
  $LONGCTX compare --runs "$MEGA,$TRF" --labels megalodon,transformer --metric val_bpb \
    --title "SOTU validation bits per byte" --out "$OUT/val_bpb.svg" | tee "$OUT/val_bpb.md"
fi
$LONGCTX eval ppl --model "$MEGA" --data moby-dick --context "$CONTEXTS" --json "$OUT/megalodon.json"
# Truncated at its training length (1024) = the sliding window at context 1024, so the slid
# window is scored on longer contexts only.
$LONGCTX eval ppl --model "$TRF" --data moby-dick --context 1024 --json "$OUT/transformer-truncated.json"
$LONGCTX eval ppl --model "$TRF" --data moby-dick --context "${CONTEXTS_SLID:-16384,all}" \
  --set 'model.mixer={"type":"sliding_window","window":1024}' --json "$OUT/transformer-sliding.json"
$LONGCTX compare --ppl "$OUT/megalodon.json,$OUT/transformer-sliding.json,$OUT/transformer-truncated.json" \
  --labels "megalodon (streamed),transformer (window 1024 slid),transformer (truncated at 1024)" \
  --title "Moby Dick bits per byte against context" --out "$OUT/moby_bpb.svg" | tee "$OUT/moby_bpb.md"
