#!/usr/bin/env bash
# The main job: a walk-through of the embedded log and the engine with the `weir` CLI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
source scripts/env.sh
cargo build --quiet --bin weir
bash scripts/cache-rocksdb.sh
weir="$CARGO_TARGET_DIR/debug/weir"
export WEIR_DATA_DIR="${WEIR_DATA_DIR:-$root/weir-data}"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "weir $*"; "$weir" "$@"; }

for t in demo-orders demo-profiles demo-order-counts demo-counter.dlq demo-counter-aggregate-0-changelog; do
  "$weir" topic delete "$t" >/dev/null 2>&1 || true
done
"$weir" group delete demo-counter >/dev/null 2>&1 || true
rm -rf "$WEIR_DATA_DIR/state/demo-counter" "$WEIR_DATA_DIR/pipelines/demo-counter.json"
echo "data directory: $WEIR_DATA_DIR"

run topic create demo-orders --partitions 3 --config retention.ms=86400000
step "printf 'alice:order-1 …' | weir produce demo-orders --key-separator :"
printf 'alice:order-1 created\nbob:order-2 created\nalice:order-1 paid\ncarol:order-3 created\nbob:order-2 shipped\nalice:order-1 shipped\n' \
  | "$weir" produce demo-orders --key-separator :
run consume demo-orders -f 'partition %p offset %o  %k => %s\n'
step "one key, one partition, in order"
"$weir" consume demo-orders -f '%k\t%p\t%s\n' | sort -s -k1,1
run topic describe demo-orders

step "a consumer group reads 4 records and commits them; describe shows the lag"
"$weir" group delete demo-billing >/dev/null 2>&1 || true
"$weir" consume demo-orders --group demo-billing --max-messages 4 -f '  %p/%o %k => %s\n'
run group describe demo-billing

run topic create demo-profiles --config cleanup.policy=compact --config segment.bytes=1024
step "200 updates of 4 keys, then compaction keeps the latest per key"
for i in $(seq 1 200); do echo "user-$((i % 4)):{\"visits\": $i}"; done | "$weir" produce demo-profiles --key-separator :
run topic compact demo-profiles
run consume demo-profiles -f '%o  %k => %s\n' --offset -4

run topic create demo-order-counts --partitions 3
step "a stateful pipeline counts events per customer (RocksDB state, exactly once), then stops when idle"
"$weir" pipeline run keyed-count --app demo-counter --input demo-orders --output demo-order-counts --until-idle-ms 500
run consume demo-order-counts --isolation read_committed -f '  %k => %s\n'
run pipeline describe demo-counter

run bench produce --records 1000000 --record-bytes 100 --flush os
run bench consume --records 1000000
echo
echo "done. Try: $weir --data-dir $WEIR_DATA_DIR consume demo-orders --follow"
