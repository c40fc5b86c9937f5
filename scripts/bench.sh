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

dd_baseline() {
  echo "== dd baseline: dd if=/dev/zero of=FILE bs=1M count=2048 conv=fdatasync"
  dd if=/dev/zero of="$data/.dd-baseline" bs=1M count=2048 conv=fdatasync 2>&1 | tail -n1
  rm -f "$data/.dd-baseline"
}

b() { echo; echo "== weir bench $*"; "$weir" --data-dir "$data" bench "$@" 2>/dev/null; }
b produce --records "$records" --record-bytes 100 --flush os
b produce --records "$records" --record-bytes 100 --flush ms:100
b produce --records "$records" --record-bytes 100 --flush batch --producers 8
# The disk of this machine kind is shared and noisy: dd right before and right after.
dd_baseline
b produce --records 2000000 --record-bytes 1000 --flush batch --producers 4
dd_baseline
b consume --records "$records" --record-bytes 100
# The engine: stateless, keyed count (all-new keys, then 3 records per key), restart.
b pipeline --records 3000000
b pipeline --records 1000000 --keys 1000000
b pipeline --records 3000000 --keys 1000000
b restart --state-mb 1024
b restart --state-mb 1024 --crash
b pipeline --records 1000000 --rate 100000 --guarantee exactly_once
b pipeline --records 1000000 --rate 100000 --guarantee exactly_once --commit-ms 10
b pipeline --records 1000000 --rate 100000 --keys 100000 --guarantee exactly_once --commit-ms 10
# Windows (window-count, 10,000 keys), joins, and 1,000,000 open windows (peak RSS).
b window --records 3000000 --keys 10000 --window tumbling:10s --emit close
b window --records 3000000 --keys 10000 --window hopping:10s:2s --emit close
b window --records 3000000 --keys 10000 --window session:5s --emit close
b window --records 3000000 --keys 10000 --window tumbling:10s --emit update
b join
b window --records 2000000 --keys 1000000 --events-per-second 1000000 --keep-open
b window --records 2000000 --keys 1000000 --events-per-second 1000000
b sql --rows 10000000
b sql --rows 10000000 --partitions 2
b sql --rows 3000000 --windowed
b sql --rows 3000000 --windowed --partitions 2
b sql --batch --rows 10000000 --partitions 2
b pull --keys 1000000 --queries 20000
# The Kafka wire protocol: librdkafka producers and consumers against `weir serve`.
SKIP_BUILD=1 bash scripts/bench-kafka.sh
