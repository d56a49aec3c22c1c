#!/usr/bin/env bash
# Prune at scale: 50 sets of 20,000 small unique files each (1,000,000 data blobs), forget the
# 25 oldest, prune; prints time and peak RSS of each step (docs/BENCHMARKS.md).
# Usage: benches/scripts/prune_scale.sh [WORKDIR] [SETS] [FILES_PER_SET]
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/store-prune-scale.XXXXXX")}"
sets="${2:-50}"
files="${3:-20000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/store/target}"
cargo build --release -p store-cli >/dev/null
store="$CARGO_TARGET_DIR/release/store"
export STORE_REPO="$work/repo"
rm -rf "$work/repo" "$work/src"
"$store" init >/dev/null
measure() { /usr/bin/time -f "%e s, peak RSS %M KB" "$@" 2>&1 >/dev/null | tail -n 1; }
python3 - "$work/src" "$sets" "$files" <<'PY'
import os, sys
root, sets, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for s in range(sets):
    for f in range(files):
        d = os.path.join(root, f"batch{s:03}", f"{f % 100:02}")
        if f < 100:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{f:06}.bin"), "w") as out:
            out.write(f"set {s} file {f} " * 4)
PY
start=$(date +%s)
for s in $(seq -f %03g 0 $((sets - 1))); do
  "$store" snapshot --tag "batch$s" --component data="$work/src/batch$s" >/dev/null
done
echo "snapshots: $sets sets x $files files in $(( $(date +%s) - start )) s"
echo "stats: $(measure "$store" stats)"
ids=$("$store" snapshots --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(" ".join(x["id"] for x in s[len(s)//2:]))')
"$store" forget $ids >/dev/null
echo "prune: $(measure "$store" prune)"
echo "check: $(measure "$store" check)"
du -sh "$work/repo"
