#!/usr/bin/env bash
# The long run of the model-based random test (tests/e2e/model.rs): many seeds, many operations
# each (snapshots of two hosts, concurrent writers, forget, prune with random --max-unused,
# crashes at named points and SIGKILL, damage and the documented repairs), every set restored
# and `check --read-data` compared with the model after every operation. A failure prints the
# seed and every operation before it; keep such a seed in REGRESSION_SEEDS.
# Usage: benches/scripts/model.sh [SEEDS] [OPS]   (defaults: 40 seeds of 150 operations)
#        SEEDS is a count N (seeds 7919, 2*7919, ...) or a comma-separated list.
set -euo pipefail
cd "$(dirname "$0")/../.."
seeds="${1:-40}"
ops="${2:-150}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/store/target}"
bash .ci/setup
start=$(date +%s)
STORE_MODEL_SEEDS="$seeds" STORE_MODEL_OPS="$ops" \
  cargo test --release -p store-cli --features crash-points --test e2e -- \
  --exact model::model_random_operations_agree_with_the_model_seeds_from_the_environment \
  --nocapture
echo "model run: seeds=$seeds ops=$ops passed in $(( $(date +%s) - start )) s"
