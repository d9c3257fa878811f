#!/usr/bin/env bash
# The main job: what longctx does, with the best models the project has (models/, checked in),
# in sections that each say what they show and how long they took. `make demo` runs the short
# tour (about 6 minutes on 2 cores, after set-up); `make demo-full` (DEMO_FULL=1) the long one:
# training from scratch, 1M-token streams, longer passkey and RULER lengths.
set -euo pipefail
cd "$(dirname "$0")/.."
LONGCTX=${LONGCTX:-build/longctx}
OUT=${OUT:-runs/demo}
FULL=${DEMO_FULL:-0}
SEED=${DEMO_SEED:-$RANDOM}  # passkey keys and RULER samples: new ones each run unless given
mkdir -p "$OUT"
t0=$(date +%s)
ts=$t0
n=0
names=()
secs=()
if [ "$FULL" = 1 ]; then total=6; else total=5; fi
end_section() {
  if [ $n -gt 0 ]; then
    local d=$(( $(date +%s) - ts ))
    secs+=("$d")
    printf -- '--- section %d took %d s\n' "$n" "$d"
  fi
}
section() {
  end_section
  n=$((n + 1))
  ts=$(date +%s)
  names+=("$1")
  printf '\n=== [%d/%d] %s  (at %ss) ===\n' "$n" "$total" "$1" $(( ts - t0 ))
}
have() { [ -f "models/$1/model.safetensors" ]; }
for m in infini-passkey megalodon-tiny transformer-tiny-1k; do
  have $m || { echo "demo: models/$m/model.safetensors is missing (git lfs? a partial clone?)" >&2; exit 1; }
done
echo "longctx demo: $total sections, keys and samples from seed $SEED (DEMO_SEED=$SEED reproduces them); outputs in $OUT/"

# ---------------------------------------------------------------------------------------------
if [ "$FULL" = 1 ]; then PK_LENGTHS=${DEMO_PASSKEY_LENGTHS:-4096,32768,131072,1048576}; else PK_LENGTHS=${DEMO_PASSKEY_LENGTHS:-4096,16384,32768,65536}; fi
section "passkey retrieval in a long stream: models/infini-passkey (Infini-attention, DeltaNet memory)"
echo "A number is hidden at the start, middle or end of $PK_LENGTHS tokens of filler; the model reads the prompt"
echo "as a stream in a fixed-size state and is asked for the number. Trained on prompts of at most 16K tokens;"
echo "docs/RESULTS.md: every key found at 4K and 32K at every depth over eight unseen seeds (192 prompts), and"
echo "keys written early lost past 48K, its limit. This run's keys are new ones (seed $SEED)."
echo "Its state is the same at every length; full attention of the same width and depth (3 layers, d 128)"
echo "would hold a KV cache of 3 KiB per token: 12 MiB at 4K, 96 MiB at 32K, 3 GiB at 1M."
$LONGCTX eval passkey --model models/infini-passkey --lengths "$PK_LENGTHS" --depths 0,50,100 \
  --samples "${DEMO_PASSKEY_SAMPLES:-2}" --seed "$SEED" --out "$OUT/passkey"
echo "heatmap: $OUT/passkey/heatmap.svg   every prompt's answer: $OUT/passkey/samples.jsonl"

# ---------------------------------------------------------------------------------------------
section "MEGALODON reads the held-out addresses as ONE stream, beside the transformer of the same size"
echo "models/megalodon-tiny and models/transformer-tiny-1k: 0.88M parameters each, the same data, steps and"
echo "tokens (make recipe-megalodon). The 12 held-out State of the Union addresses (${DEMO_PPL_BYTES:-100000} bytes):"
echo "MEGALODON as one stream in a constant state; the transformer in windows of its trained context (1024),"
echo "its best. Lower is better."
$LONGCTX eval ppl --model models/megalodon-tiny --data val --max-bytes "${DEMO_PPL_BYTES:-100000}" --context all \
  --json "$OUT/megalodon-val.json"
$LONGCTX eval ppl --model models/transformer-tiny-1k --data val --max-bytes "${DEMO_PPL_BYTES:-100000}" --context 1024 \
  --json "$OUT/transformer-val.json"
if [ "$FULL" = 1 ]; then
  echo "Moby Dick (never trained on), the whole book as one stream:"
  $LONGCTX eval ppl --model models/megalodon-tiny --data moby-dick --context all --json "$OUT/megalodon-moby.json"
fi
echo "MEGALODON continues the addresses:"
$LONGCTX generate --model models/megalodon-tiny --prompt "Fellow citizens" --max-tokens 200 --temperature 0.8 \
  --top-p 0.95 --seed 1

# ---------------------------------------------------------------------------------------------
section "longctx serve: a session reads Moby Dick over HTTP; the server is killed and restarted; the session answers the same"
python3 scripts/demo_serve.py --longctx "$LONGCTX" --model models/megalodon-tiny --bytes "${DEMO_SERVE_BYTES:-131072}"

# ---------------------------------------------------------------------------------------------
if [ "$FULL" = 1 ]; then STEPS=${DEMO_STEPS:-600}; else STEPS=${DEMO_STEPS:-120}; fi
section "the trainer: transformer-tiny from scratch for $STEPS steps (progress bar, log, loss curve)"
echo "configs/demo-tiny.json: 0.87M parameters, byte tokens, the State of the Union addresses split by document."
echo "The checked-in models are trained longer by their recipes (make recipe-tiny, recipe-megalodon, ...)."
rm -rf "$OUT/train"
$LONGCTX train --config configs/demo-tiny.json --out "$OUT/train" --steps "$STEPS" \
  --set train.eval_every=$(( STEPS / 3 > 0 ? STEPS / 3 : 1 )) --set train.checkpoint_every="$STEPS"
echo "log: $OUT/train/log.jsonl   loss curve: $OUT/train/loss.svg"
$LONGCTX generate --model "$OUT/train" --prompt "Fellow citizens" --max-tokens 120 --temperature 0.8 --top-p 0.95 \
  --seed 1 --set 'model.mixer={"type":"sliding_window","window":128}'
echo

# ---------------------------------------------------------------------------------------------
if [ "$FULL" = 1 ]; then
  SUITE_PK=${DEMO_SUITE_LENGTHS:-4096,16384,65536}; SUITE_RULER=${DEMO_RULER_LENGTHS:-4096,16384}; SUITE_SAMPLES=4
else
  SUITE_PK=${DEMO_SUITE_LENGTHS:-4096,16384}; SUITE_RULER=${DEMO_RULER_LENGTHS:-4096}; SUITE_SAMPLES=2
fi
MODELS=""
for m in infini-passkey infini-passkey-linear fam-passkey beacon-tiny megalodon-tiny transformer-tiny-1k transformer-tiny; do
  have $m && MODELS="$MODELS${MODELS:+,}models/$m"
done
section "results table: every checked-in model measured the same way (passkey, RULER, state, speed)"
echo "Passkey at $SUITE_PK tokens (depths 0/50/100, $SUITE_SAMPLES keys each), RULER niah_single_1 at $SUITE_RULER,"
echo "held-out bits per byte at each model's trained context, tokens/s and state streaming at batch 1."
rm -rf "$OUT/table"
$LONGCTX eval suite --models "$MODELS" --passkey-lengths "$SUITE_PK" --samples "$SUITE_SAMPLES" \
  --ruler-lengths "$SUITE_RULER" --ruler-samples "$SUITE_SAMPLES" --ppl-bytes 32768 --seed "$SEED" --out "$OUT/table"
echo "table: $OUT/table/table.md (and .json); plot: $OUT/table/table.svg"

# ---------------------------------------------------------------------------------------------
if [ "$FULL" = 1 ]; then
  section "one million tokens through a sliding window: flat memory"
  $LONGCTX info --model models/transformer-tiny --tokens 1024,16384,131072,1048576 \
    --set 'model.mixer={"type":"sliding_window","window":128,"sinks":4}' | tail -5
fi

end_section
echo
echo "=== done in $(( $(date +%s) - t0 )) s ==="
for i in "${!names[@]}"; do printf '%4d s  %s\n' "${secs[$i]}" "${names[$i]}"; done
