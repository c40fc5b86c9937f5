#!/usr/bin/env bash
# Reproduces the README's performance table on this machine: a dd baseline and `weir bench`
# runs, in the same data directory, in one go. Release build (not part of CI).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
source scripts/env.sh
cargo build --release --quiet --bin weir
weir="$CARGO_TARGET_DIR/release/weir"
data="${WEIR_DATA_DIR:-$root/weir-data}"
mkdir -p "$data"
records="${RECORDS:-10000000}"

echo "== dd baseline: 2 GiB of 1 MiB writes, one fdatasync"
dd if=/dev/zero of="$data/.dd-baseline" bs=1M count=2048 conv=fdatasync 2>&1 | tail -n1
rm -f "$data/.dd-baseline"

b() { echo; echo "== weir bench $*"; "$weir" --data-dir "$data" bench "$@" 2>/dev/null; }
b produce --records "$records" --record-bytes 100 --flush os
b produce --records "$records" --record-bytes 100 --flush ms:100
b produce --records "$records" --record-bytes 100 --flush batch --producers 8
b produce --records 2000000 --record-bytes 1000 --flush batch --producers 4
b consume --records "$records" --record-bytes 100
