#!/usr/bin/env bash
# Benchmarks of docs/BENCHMARKS.md, each with its reference measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "## training throughput"
build/bench_train --config configs/transformer-tiny.json --steps 10
echo
echo "## streaming prefill"
build/bench_stream --config configs/transformer-tiny.json --window 512 --lengths 4096,65536,1048576 --full-max 65536
