#!/usr/bin/env bash
# How --max-unused trades space for copying: one set of 60 files (1 MiB of random data each, in
# 4 MiB packs), then 20 sets that each delete 2 random files; forget all but the newest set and
# plan prunes with several thresholds (bytes freed vs bytes copied).
# Usage: benches/scripts/max_unused.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/store-max-unused.XXXXXX")}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/store/target}"
cargo build --release -p store-cli >/dev/null
store="$CARGO_TARGET_DIR/release/store"
export STORE_REPO="$work/repo"
rm -rf "$work/repo" "$work/src"
mkdir -p "$work/src"
"$store" init --pack-size 4MiB >/dev/null
for i in $(seq -w 0 59); do head -c 1048576 /dev/urandom > "$work/src/f$i"; done
"$store" snapshot --full "$work/src" >/dev/null
RANDOM=7
for s in $(seq 1 20); do
  for k in 1 2; do
    victim=$(ls "$work/src" | sed -n "$(( RANDOM % $(ls "$work/src" | wc -l) + 1 ))p")
    rm -f "$work/src/$victim"
  done
  "$store" snapshot --full "$work/src" >/dev/null
done
ids=$("$store" snapshots --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(" ".join(x["id"] for x in s[1:]))')
"$store" forget $ids >/dev/null
echo "packs before prune: $(du -sb "$work/repo/packs" | cut -f1) bytes; live data: $(du -sb "$work/src" | cut -f1) bytes"
echo "max_unused%  bytes_freed  bytes_copied  packs_repacked"
for m in 0 5 10 25 50 75 100; do
  "$store" prune --dry-run --json --max-unused "$m" |
    python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"$m\t{r['bytes_freed']}\t{r['bytes_copied']}\t{r['packs_repacked']}\")"
done
