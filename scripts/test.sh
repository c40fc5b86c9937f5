#!/usr/bin/env bash
# The test command: set-up, then every test of the workspace (unit, integration, doc tests,
# the kill -9 crash test with WEIR_CRASH_CYCLES cycles, default 20).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
source scripts/env.sh
cargo test --workspace --all-targets --no-fail-fast
cargo test --workspace --doc
# Examples are documentation: they must keep running.
for ex in examples/*.rs; do
  name=$(basename "$ex" .rs)
  echo "== example $name"
  cargo run --quiet --example "$name"
done
bash scripts/cache-rocksdb.sh
