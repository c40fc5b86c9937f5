#!/usr/bin/env bash
# The main job: a walk-through of the embedded log and the engine with the `weir` CLI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
source scripts/env.sh
# The release binary, so the bench lines at the end show what Weir does (a debug build is 3-9x
# slower). With the RocksDB library cached by an earlier build this is a few minutes.
cargo build --release --quiet --bin weir
bash scripts/cache-rocksdb.sh
weir="$CARGO_TARGET_DIR/release/weir"
export WEIR_DATA_DIR="${WEIR_DATA_DIR:-$root/weir-data}"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "weir $*"; "$weir" "$@"; }

for t in demo-orders demo-profiles demo-order-counts demo-clicks demo-click-windows; do
  "$weir" topic delete "$t" >/dev/null 2>&1 || true
done
# A rerun starts the demo's pipeline over: offsets, state and internal topics.
if [ -d "$WEIR_DATA_DIR/topics" ]; then
  "$weir" pipeline reset demo-counter >/dev/null
  "$weir" pipeline reset demo-windows >/dev/null
fi
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
run consume demo-profiles -f '%o  %k => %s\n'

run topic create demo-order-counts --partitions 3
step "a stateful pipeline counts events per customer (RocksDB state, exactly once), then stops when idle"
"$weir" pipeline run keyed-count --app demo-counter --input demo-orders --output demo-order-counts --until-idle-ms 500
run consume demo-order-counts --isolation read_committed -f '  %k => %s\n'
run pipeline describe demo-counter

run topic create demo-clicks --partitions 2
run topic create demo-click-windows --partitions 2
step "clicks with event times (ms) in their JSON, 3 s late at most; one far in the future on each partition closes the windows"
for i in $(seq 0 59); do echo "user-$((i % 3)):{\"ts\": $((1700000000000 + i * 500 - (i % 4) * 700))}"; done \
  | "$weir" produce demo-clicks --key-separator :
for p in 0 1; do echo 'end:{"ts": 1700000999000}' | "$weir" produce demo-clicks --key-separator : --partition $p; done
step "a windowed pipeline: clicks per user in tumbling 10 s windows of event time, one final result per window"
"$weir" pipeline run window-count --app demo-windows --input demo-clicks --output demo-click-windows \
  --window tumbling:10s --out-of-orderness 3s --emit close --until-idle-ms 800
run consume demo-click-windows --isolation read_committed -f '  %k => %s\n'
run pipeline describe demo-windows

run bench produce --records 1000000 --record-bytes 100 --flush os
run bench consume --records 1000000
run bench window --records 1000000 --keys 10000 --window tumbling:10s --emit close
echo
echo "done. Try: $weir --data-dir $WEIR_DATA_DIR consume demo-orders --follow"
