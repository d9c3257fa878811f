#!/usr/bin/env bash
# Installs the Debian packages longctx needs. Idempotent: does nothing when all are present.
set -euo pipefail
PKGS=(build-essential cmake g++ make libtorch-dev libopenblas0-pthread libopenblas0-openmp libsentencepiece-dev
      nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libsqlite3-dev libpcre2-dev libicu-dev libgtest-dev libgloo-dev
      pkg-config wamerican bible-kjv ca-certificates chromium python3)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come with a Node.js installed outside Debian: only ask Debian for it when absent.
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all Debian packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
