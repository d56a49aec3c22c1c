#!/usr/bin/env bash
# The macro benchmarks (docs/BENCHMARKS.md): installs restic, Borg and GNU time from Debian,
# builds `store` and the harness, and runs a scenario side by side with restic and Borg.
#   bash benches/run.sh                          # Alfresco, 2.26 GB, 3 runs, warm cache
#   bash benches/run.sh run --dataset marklogic  # MarkLogic forests and journals
#   bash benches/run.sh metadata                 # 1,000,000 small files
#   bash benches/run.sh small-files              # restoring 200,000 small files against cp -r
#   bash benches/run.sh pg-dump                  # a real PostgreSQL dump, then 4,000 rows updated
#   bash benches/run.sh write-once               # 1,000,000 files, write-once incrementals
#   bash benches/run.sh growth                   # snapshot RSS with 100,000 and 5,000,000 blobs
#   bash benches/run.sh s3 [--scale 0.25]        # Alfresco in object storage (a local SeaweedFS),
#                                                # store against restic, with requests per step
# Reports go to benches/results/<scenario>.md and .json; scratch space is /tmp/store-bench
# (about 4x the data size; change it with --work DIR before the scenario name).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v restic >/dev/null || ! command -v borg >/dev/null || [ ! -x /usr/bin/time ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq restic borgbackup time >/dev/null
fi
[ -f .ci/setup ] && bash .ci/setup
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/store/target}"
cargo build --release -p store-cli -p store-benches --bin store --bin store-bench
bench="$CARGO_TARGET_DIR/release/store-bench"
if [ "$#" -eq 0 ]; then set -- run; fi
if [ "$1" = s3 ]; then
  shift
  s3dir="$(mktemp -d)"
  trap 'bash .ci/s3-server stop "$s3dir"; rm -rf "$s3dir"' EXIT
  eval "$(bash .ci/s3-server start "$s3dir")"
  "$bench" --store "$CARGO_TARGET_DIR/release/store" run --tools store,restic \
    --s3 "$STORE_TEST_S3" --s3-metrics "$STORE_TEST_S3_METRICS" "$@"
  exit
fi
exec "$bench" --store "$CARGO_TARGET_DIR/release/store" "$@"
