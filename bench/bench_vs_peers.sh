#!/bin/bash
# Issue 24's comparison in one run, one process at a time (2 cores: never in parallel):
# the Python peers (../shared/peers, torch from Debian's python3-torch) on the issue's
# configuration, then longctx on the same one with the fused attention kernel and with the
# previous one, decoding, training, and full attention's memory at 64K.
#
#   bench/bench_vs_peers.sh [OUT_DIR]        # default runs/bench-vs-peers
#
# Needs: build/ (bench_stream, bench_train, bench_attention); for the peers, python3-torch and
# the peers' sources extracted under PEER_ROOT (default /tmp/peers) as ../shared/peers/README.md
# says. Without them the peer rows are skipped and say so.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-runs/bench-vs-peers}
mkdir -p "$OUT"
PEERS=${PEERS:-../shared/peers}
ROOT=${PEER_ROOT:-/tmp/peers}
CFG="--dim 256 --layers 4 --heads 4 --vocab 256 --segment 512"
N=${N:-65536}
log() { echo "== $(date +%T) $*" | tee -a "$OUT/log.txt"; }

peer() {  # peer NAME SCRIPT ARGS...
  local src=$1 script=$2; shift 2
  if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import torch' 2>/dev/null && [ -d "$ROOT/$src" ]; then
    PEER_SRC="$ROOT/$src" /usr/bin/python3 "$PEERS/$script" $CFG "$@" 2>>"$OUT/log.txt" | tee -a "$OUT/peers.jsonl"
  else
    echo "{\"peer\": \"$src\", \"skipped\": \"python3-torch or $ROOT/$src missing\"}" | tee -a "$OUT/peers.jsonl"
  fi
}

: > "$OUT/peers.jsonl"
log "peers: prefill $N tokens"
peer infini-transformer-pytorch infini_py.py --seq-len "$N"
peer nanoGPT gpt_py.py --mode segment --seq-len "$N"
log "longctx: prefill $N tokens + decode, fused kernel then the previous one"
for impl in fused blocked; do
  build/bench_stream --threads 2 --config configs/bench-d256.json --window 512 --segment 512 --lengths "$N" \
    --mixers sliding_window,infini_attention:delta --decode 2048 --attention $impl | tee "$OUT/stream-$impl.md"
done
log "longctx: the attention kernel alone"
build/bench_attention --threads 2 | tee "$OUT/attention.md"
log "longctx: training 8 x 2048"
for impl in fused blocked; do
  build/bench_train --threads 2 --config configs/bench-d256.json --batch 8 --seq 2048 --steps 3 --attention $impl \
    | tee "$OUT/train-$impl.md"
done
log "peers: the same run's second prefill"
peer infini-transformer-pytorch infini_py.py --seq-len "$N"
peer nanoGPT gpt_py.py --mode segment --seq-len "$N"
log done
