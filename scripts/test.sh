#!/usr/bin/env bash
# The test command: set-up, then every test of the workspace (unit, integration, doc tests,
# the kill -9 crash test with WEIR_CRASH_CYCLES cycles, default 20).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
source scripts/env.sh
# Build everything first and keep the RocksDB build (cache-rocksdb.sh): later builds, of any
# profile (make demo's release build, a fresh target dir), link it instead of compiling it.
cargo test --workspace --all-targets --no-run
bash scripts/cache-rocksdb.sh
cargo test --workspace --all-targets --no-fail-fast
cargo test --workspace --doc
# Examples are documentation: they must keep running. They are built here with the
# workspace's feature set (what the tests built); `cargo run --example` would resolve features
# for the root package alone and build RocksDB's crates (and on a fresh machine RocksDB
# itself) again.
cargo build --workspace --examples
for ex in examples/*.rs; do
  name=$(basename "$ex" .rs)
  echo "== example $name"
  "$CARGO_TARGET_DIR/debug/examples/$name"
done
