#!/usr/bin/env bash
# The main job: a walk-through of the embedded log, the engine, SQL and CDC read models with the
# `weir` CLI and psql.
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

for t in demo-orders demo-profiles demo-order-counts demo-clicks demo-click-windows \
  demo_shop.public.customers demo_shop.public.orders; do
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

step "SQL: weir serve runs persistent queries; weir sql and psql reach it over the Postgres protocol"
rm -f "$WEIR_DATA_DIR/serve.json"
"$weir" serve --kafka-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --pg-listen 127.0.0.1:0 --sqs-listen 127.0.0.1:0 \
  >/dev/null 2>"$WEIR_DATA_DIR/demo-serve.log" &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null || true' EXIT
pg=""
for _ in $(seq 1 300); do
  pg=$(python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); print(v["pg"] if v.get("pid")==int(sys.argv[2]) else "")' \
    "$WEIR_DATA_DIR/serve.json" "$serve_pid" 2>/dev/null || true)
  [ -n "$pg" ] && break
  sleep 0.1
done
[ -n "$pg" ] || { echo "weir serve did not start; see $WEIR_DATA_DIR/demo-serve.log"; exit 1; }
pghost=${pg%:*}; pgport=${pg##*:}
sql() { step "weir sql -c \"$1\""; "$weir" sql -c "$1"; }
psql_c() { step "psql -c \"$1\""; psql -h "$pghost" -p "$pgport" -U weir -X -c "$1"; }
psql_value() { psql -h "$pghost" -p "$pgport" -U weir -X -tA -c "$1" 2>/dev/null || true; }
until_value() { # statement, expected value: persistent queries commit every interval
  for _ in $(seq 1 200); do [ "$(psql_value "$1")" = "$2" ] && return 0; sleep 0.1; done
  echo "timed out waiting for $1 = $2"; exit 1
}
for v in demo_totals demo_windows; do "$weir" sql -c "DROP MATERIALIZED VIEW IF EXISTS $v" >/dev/null; done
"$weir" sql -c "DROP STREAM IF EXISTS demo_bids" >/dev/null
"$weir" topic delete demo-bids >/dev/null 2>&1 || true
sql "CREATE STREAM demo_bids (auction BIGINT, price BIGINT, ts TIMESTAMP,
       WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (topic = 'demo-bids', format = 'json', partitions = 2)"
sql "INSERT INTO demo_bids VALUES (1, 10, TIMESTAMP '2026-01-01 00:00:01'), (1, 30, TIMESTAMP '2026-01-01 00:00:04'),
       (2, 5, TIMESTAMP '2026-01-01 00:00:09'), (3, 70, TIMESTAMP '2026-01-01 00:00:12'), (2, 50, TIMESTAMP '2026-01-01 00:00:15')"
step "a batch query over what the log holds now (DataFusion, partitions scanned in parallel)"
sql "SELECT auction, COUNT(*) AS n, MAX(price) AS top FROM demo_bids GROUP BY auction ORDER BY auction"
step "materialized views: persistent queries on the engine (RocksDB state, exactly once)"
sql "CREATE MATERIALIZED VIEW demo_totals AS SELECT auction, COUNT(*) AS n, SUM(price) AS total FROM demo_bids GROUP BY auction"
sql "CREATE MATERIALIZED VIEW demo_windows AS
       SELECT auction, window_start, window_end, COUNT(*) AS n, MAX(price) AS highest
       FROM TUMBLE(demo_bids, ts, INTERVAL '10' SECOND) GROUP BY auction, window_start, window_end
       EMIT ON WINDOW CLOSE"
until_value "SELECT SUM(n) FROM demo_totals" 5
step "pull queries read the view's committed state; by key it is one RocksDB lookup"
psql_c "SELECT * FROM demo_totals WHERE auction = 1"
psql_c "SELECT * FROM demo_totals ORDER BY total DESC"
step "a subscription streams a view's rows, then its changes (op column), for 4 s"
(timeout -s INT 4 psql -h "$pghost" -p "$pgport" -U weir -X -c "COPY (SUBSCRIBE TO demo_totals) TO STDOUT" 2>/dev/null || true) &
sub=$!
sleep 1.5
"$weir" sql -c "INSERT INTO demo_bids VALUES (1, 99, TIMESTAMP '2026-01-01 00:00:31'), (4, 1, TIMESTAMP '2026-01-01 00:00:32')" >/dev/null
wait $sub
step "the bids at 00:00:31 closed the windows before 00:00:30: one row per window"
until_value "SELECT COUNT(*) FROM demo_windows" 4
psql_c "SELECT auction, window_start, n, highest FROM demo_windows ORDER BY auction, window_start"

step "CDC: a shop's PostgreSQL tables captured by weir serve, joined and aggregated into a read model kept in PostgreSQL"
shop_server=$(cat "${WEIR_CACHE:-$HOME/.cache/weir}/postgres.url")
shop="${shop_server%/*}/weir_demo_shop"
pg_shop() { psql "$1" -XAtq -v ON_ERROR_STOP=1 -c "$2"; }
for q in "DROP SINK IF EXISTS demo_summary_pg" "DROP MATERIALIZED VIEW IF EXISTS demo_summary" \
  "DROP MATERIALIZED VIEW IF EXISTS demo_order_stats" "DROP TABLE IF EXISTS demo_orders" \
  "DROP TABLE IF EXISTS demo_customers" "DROP SOURCE IF EXISTS demo_shop"; do
  "$weir" sql -c "$q" >/dev/null
done
pg_shop "$shop_server" "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'weir_demo_slot'" >/dev/null
pg_shop "$shop_server" "DROP DATABASE IF EXISTS weir_demo_shop WITH (FORCE)"
pg_shop "$shop_server" "CREATE DATABASE weir_demo_shop"
shop_sql() { step "psql shop -c \"$1\""; psql "$shop" -X -v ON_ERROR_STOP=1 -c "$1"; }
shop_value() { pg_shop "$shop" "$1" 2>/dev/null || true; }
shop_until() {
  for _ in $(seq 1 300); do [ "$(shop_value "$1")" = "$2" ] && return 0; sleep 0.1; done
  echo "timed out waiting for $1 = $2"; exit 1
}
shop_sql "CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT);
  CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id BIGINT, total BIGINT, placed_at TIMESTAMP);
  INSERT INTO customers VALUES (1, 'Ada'), (2, 'Bo'), (3, 'Cy');
  INSERT INTO orders VALUES (10, 1, 2500, '2026-12-01 10:00'), (11, 1, 1200, '2026-12-02 09:30'), (12, 2, 800, '2026-12-02 11:00')"
sql "CREATE SOURCE demo_shop WITH (connector = 'postgres-cdc', url = '$shop',
       publication = 'weir_demo_pub', slot = 'weir_demo_slot', 'topic.prefix' = 'demo_shop')"
sql "CREATE TABLE demo_customers (id BIGINT PRIMARY KEY, name TEXT)
       WITH (topic = 'demo_shop.public.customers', format = 'debezium_json')"
sql "CREATE TABLE demo_orders (id BIGINT PRIMARY KEY, customer_id BIGINT, total BIGINT, placed_at TIMESTAMP)
       WITH (topic = 'demo_shop.public.orders', format = 'debezium_json')"
step "an aggregate over a table updates by retraction; a join of tables follows both sides"
sql "CREATE MATERIALIZED VIEW demo_order_stats AS SELECT customer_id, COUNT(*) AS orders, SUM(total) AS total,
       MAX(placed_at) AS last_order FROM demo_orders GROUP BY customer_id"
sql "CREATE MATERIALIZED VIEW demo_summary AS SELECT c.id, c.name, s.orders, s.total, s.last_order
       FROM demo_customers c LEFT JOIN demo_order_stats s ON s.customer_id = c.id"
sql "CREATE SINK demo_summary_pg FROM demo_summary
       WITH (connector = 'postgres', url = '$shop', table = 'customer_order_summary', primary_key = 'id')"
shop_until "SELECT COUNT(*) FROM customer_order_summary" 3
shop_until "SELECT SUM(total) FROM customer_order_summary" 4500
shop_sql "SELECT * FROM customer_order_summary ORDER BY id"
step "the shop changes: Cy orders, Ada's first order is cancelled, Bo is renamed — one transaction"
shop_sql "BEGIN; INSERT INTO orders VALUES (13, 3, 4200, '2026-12-03 08:15'); DELETE FROM orders WHERE id = 10;
  UPDATE customers SET name = 'Bob' WHERE id = 2; COMMIT"
shop_until "SELECT SUM(total) || name FROM customer_order_summary WHERE id = 2 GROUP BY name" "800Bob"
shop_until "SELECT SUM(total) FROM customer_order_summary" 6200
shop_sql "SELECT * FROM customer_order_summary ORDER BY id"
step "exactly once: the view's positions the sink applied, committed with the rows"
shop_sql "SELECT * FROM weir_sink_offsets"
psql_c "SELECT * FROM demo_summary ORDER BY id"
sql "SHOW QUERIES"

step "queues: a work queue with a dead-letter queue on the same server, over the SQS API (weir queue speaks it too)"
sqs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sqs"])' "$WEIR_DATA_DIR/serve.json")
run queue create demo-jobs-dlq
run queue create demo-jobs --visibility 1 --dlq demo-jobs-dlq --max-receives 2
step "printf 'resize img-1\\nresize img-2\\nresize corrupt.png\\n' | weir queue send demo-jobs"
printf 'resize img-1\nresize img-2\nresize corrupt.png\n' | "$weir" queue send demo-jobs
step "a boto3 worker (unmodified AWS client) that fails on corrupt.png: it deletes what it did, the failure's lock runs out"
"${WEIR_CACHE:-$HOME/.cache/weir}/venv/bin/python" - "$sqs" <<'PY'
import sys, time
import boto3
sqs = boto3.client("sqs", endpoint_url="http://" + sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="demo", aws_secret_access_key="demo")
url = sqs.get_queue_url(QueueName="demo-jobs")["QueueUrl"]
deadline = time.time() + 6
while time.time() < deadline:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                              AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
    for m in got:
        n = m["Attributes"]["ApproximateReceiveCount"]
        if "corrupt" in m["Body"]:
            print(f"  worker: {m['Body']!r} failed on delivery {n}; its lock runs out in 1 s")
        else:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            print(f"  worker: {m['Body']!r} done")
PY
step "after 2 deliveries the next receive moved it to the dead-letter queue, with why"
run queue describe demo-jobs
run queue receive demo-jobs-dlq --visibility 0
step "the bug is fixed: redrive the dead letters back, and a worker acks them"
run queue redrive demo-jobs-dlq
run queue receive demo-jobs --wait 2 --ack
step "the queue's metrics, as Prometheus scrapes them (alert on age and on dead letters)"
http=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$WEIR_DATA_DIR/serve.json")
curl -s "http://$http/metrics" | grep '^weir_queue_.*demo-jobs' || true
kill $serve_pid; wait $serve_pid 2>/dev/null || true
trap - EXIT

run bench produce --records 1000000 --record-bytes 100 --flush os
run bench consume --records 1000000
run bench window --records 1000000 --keys 10000 --window tumbling:10s --emit close
echo
echo "done. Try: $weir --data-dir $WEIR_DATA_DIR consume demo-orders --follow"
