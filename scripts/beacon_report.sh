#!/usr/bin/env bash
# The Activation Beacon plot and table of docs/RESULTS.md from scripts/beacon.sh's evaluations:
# bits per byte on Moby Dick against the context, one series per method.
# Usage: scripts/beacon_report.sh [RUN_DIR (runs/beacon)] [SVG (docs/img/beacon-moby.svg)]
set -euo pipefail
LONGCTX=${LONGCTX:-build/longctx}
RUN=${1:-runs/beacon}
SVG=${2:-docs/img/beacon-moby.svg}
E=$RUN/eval
series=() labels=()
add() {  # add LABEL FILE...: one series from the files that exist
  local label=$1 files=()
  shift
  for f in "$@"; do [ -f "$E/$f.json" ] && files+=("$E/$f.json"); done
  [ ${#files[@]} -eq 0 ] && return
  series+=("$(IFS=+; echo "${files[*]}")")
  labels+=("$label")
}
add "base (full attention)" base-1024 base-16384
add "base (sliding window W)" base-1024 sliding-16384 sliding-65536
add "base + PI x16" pi-16384
add "base + dynamic NTK" ntk-16384
for a in 2 4 8 16 32 128; do add "beacons ratio $a" beacon-a$a-1024 beacon-a$a-16384 beacon-a$a-65536; done
# The ratio chosen by length (the smallest whose reach covers it): 2 at W, 32 at 16W, 128 at 64W.
add "beacons (ratio by length)" beacon-a2-1024 beacon-a32-16384 beacon-a128-65536
mkdir -p "$(dirname "$SVG")"
"$LONGCTX" compare --ppl "$(IFS=,; echo "${series[*]}")" --labels "$(IFS=,; echo "${labels[*]}")" \
  --title "Activation Beacon on transformer-tiny-1k (W = 1024): Moby Dick, first 256 KiB" --out "$SVG"
