#!/usr/bin/env bash
# The main job, end to end: train a small model on real text, evaluate it on held-out addresses
# and on a book it never saw (streamed in bounded memory), and generate from it.
set -euo pipefail
cd "$(dirname "$0")/.."
LONGCTX=${LONGCTX:-build/longctx}
RUN=${RUN:-runs/demo-tiny}
STEPS=${DEMO_STEPS:-}
t0=$(date +%s)
section() { printf '\n=== %s (%ss) ===\n' "$1" $(( $(date +%s) - t0 )); }

section "train transformer-tiny on State of the Union addresses (byte tokens, 12 addresses held out)"
rm -rf "$RUN"
$LONGCTX train --config configs/demo-tiny.json --out "$RUN" ${STEPS:+--steps $STEPS}
echo "log: $RUN/log.jsonl   loss curve: $RUN/loss.svg"

section "held-out addresses: full attention at its trained context (128) and past it (512)"
$LONGCTX eval ppl --model "$RUN" --data val --max-bytes 100000 --context 128,512

section "state carried after N tokens: full attention grows, the sliding window does not"
$LONGCTX info --model "$RUN" --tokens 1024,16384 | tail -3
$LONGCTX info --model "$RUN" --tokens 1024,16384,131072 \
  --set 'model.mixer={"type":"sliding_window","window":128,"sinks":4}' | tail -4

section "Moby Dick (never trained on): its first 200 KB as one stream through a sliding window of 128"
$LONGCTX eval ppl --model "$RUN" --data moby-dick --max-bytes 200000 --context all --json "$RUN/moby-dick.json" \
  --set 'model.mixer={"type":"sliding_window","window":128,"sinks":4}'

section "generate (through a sliding window of the trained length, so positions never leave what training saw)"
$LONGCTX generate --model "$RUN" --prompt "Fellow citizens" --max-tokens 300 --temperature 0.8 --top-p 0.95 --seed 1 \
  --set 'model.mixer={"type":"sliding_window","window":128}'

if [ -f models/transformer-tiny/model.safetensors ]; then
  section "the project's best transformer-tiny (trained longer by make recipe-tiny, checked in)"
  $LONGCTX eval ppl --model models/transformer-tiny --data val --max-bytes 100000 --context 128
  $LONGCTX generate --model models/transformer-tiny --prompt "Fellow citizens" --max-tokens 300 --temperature 0.8 --top-p 0.95 --seed 1 \
    --set 'model.mixer={"type":"sliding_window","window":128}'
fi
if [ -f models/megalodon-tiny/model.safetensors ]; then
  section "MEGALODON (checked-in models/megalodon-tiny, the project's best model: held-out 1.467 bits/byte; make recipe-megalodon)"
  echo "Held-out addresses and the first 100 KB of Moby Dick, each read as one stream: the state stays 1.19 MiB however long it runs."
  $LONGCTX eval ppl --model models/megalodon-tiny --data val --max-bytes 100000 --context all
  $LONGCTX eval ppl --model models/megalodon-tiny --data moby-dick --max-bytes 100000 --context all
  $LONGCTX generate --model models/megalodon-tiny --prompt "Fellow citizens" --max-tokens 300 --temperature 0.8 --top-p 0.95 --seed 1
fi
if [ -f models/infini-passkey/model.safetensors ]; then
  section "Infini-attention with DeltaNet's memory (checked-in models/infini-passkey, make recipe-dnet-passkey): passkey retrieval"
  echo "Trained on prompts of at most 16384 tokens (and on the states longer streams leave). Measured over eight unseen seeds (docs/RESULTS.md): 100% at 4096 and 32768 tokens at every depth (192 of 192 prompts); 8 of 8 at 48K with the key at the start."
  echo "The state is 858 KiB at every length; full attention's KV cache would be 12 MiB at 4096 and 96 MiB at 32768."
  $LONGCTX eval passkey --model models/infini-passkey --lengths ${DEMO_PASSKEY_LENGTHS:-4096,32768} \
    --depths ${DEMO_PASSKEY_DEPTHS:-0,50,100} --samples ${DEMO_PASSKEY_SAMPLES:-3} --seed "${DEMO_PASSKEY_SEED:-$RANDOM}" \
    --out "$RUN/passkey"
  echo "heatmap: $RUN/passkey/heatmap.svg   per sample: $RUN/passkey/samples.jsonl"
fi
if [ -f models/megalodon-tiny/model.safetensors ]; then
  section "longctx serve: a session reads Moby Dick over HTTP, the server is killed (SIGKILL) and restarted, the session answers the same"
  python3 scripts/demo_serve.py --longctx "$LONGCTX" --model models/megalodon-tiny --bytes ${DEMO_SERVE_BYTES:-131072}
fi
section "done"
