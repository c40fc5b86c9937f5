#!/usr/bin/env bash
# Benchmarks `weir serve` with real librdkafka clients (confluent-kafka in the project's venv,
# and kcat): a fresh data directory and server, an 8-partition topic, then
#   1. produce at the maximum rate (acks=all, idempotent, 100 B values) for each number of
#      producer processes in PROCESSES, plus one run with a produce() call per message;
#   2. produce paced at half the best rate, and at LOW_RATE (default 100000 msg/s):
#      delivery latency p50/p99/p99.9;
#   3. consume through Fetch (confluent-kafka, then kcat as a C reference);
#   4. if perf works, a call-graph profile of the server during a max-rate produce run and
#      during a consume run, summarized by scripts/perf_summary.py.
# Every run samples the server's CPU (utime+stime from /proc) and gives CPU per message.
# Release build (not part of CI). Clients and server share the machine's cores: read the
# client CPU per message beside the rates.
#
# Knobs (environment): MESSAGES (per produce run, default 5000000), PROCESSES (producer
# process counts to try, default "2 3 4"), CONSUME_PROCESSES (default "1 2"), PARTITIONS
# (default 8), LATENCY_SECONDS (default 10), LOW_RATE (default 100000), PERF (auto|0),
# SKIP_BUILD=1 (use the binary already built), KEEP_DATA=1 (keep the data directory and
# server log).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
source scripts/env.sh
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet --bin weir
weir="$CARGO_TARGET_DIR/release/weir"
py="$WEIR_CACHE/venv/bin/python"
messages="${MESSAGES:-5000000}"
processes="${PROCESSES:-2 3 4}"
consume_processes="${CONSUME_PROCESSES:-1 2}"
partitions="${PARTITIONS:-8}"
latency_seconds="${LATENCY_SECONDS:-10}"

data="$(mktemp -d "${TMPDIR:-/tmp}/weir-bench-kafka.XXXXXX")"
results="$data.results.jsonl"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "${KEEP_DATA:-0}" = 1 ]; then
    echo "kept: $data (server log $data.log, results $results)"
  else
    rm -rf "$data" "$data.log" "$data.out" "$results" "$data".perf.*
  fi
}
trap cleanup EXIT

"$weir" --data-dir "$data" serve --kafka-listen 127.0.0.1:0 --http-listen off >"$data.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do [ -s "$data/serve.json" ] && break; sleep 0.1; done
[ -s "$data/serve.json" ] || { echo "weir serve did not start:" >&2; cat "$data.log" >&2; exit 1; }
bootstrap="$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["kafka"])' "$data/serve.json")"
echo "== weir serve pid $server_pid on $bootstrap, data in $data; $(nproc) cores"

cpu_seconds() { awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / t }' "/proc/$1/stat"; }
# Runs kafka_load.py: its summary line to stdout, its JSON appended to $results.
load() {
  echo "-- load average $(cut -d' ' -f1-3 /proc/loadavg); kafka_load.py $*"
  "$py" scripts/kafka_load.py "$@" --bootstrap "$bootstrap" --server-pid "$server_pid" --json \
    >"$data.out"
  grep -v '^{' "$data.out" || true
  grep '^{' "$data.out" >>"$results"
}
field() { "$py" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

perf_ok=0
if [ "${PERF:-auto}" != 0 ] && command -v perf >/dev/null \
  && perf record -q -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then
  perf_ok=1
fi
# `perf_start SECONDS NAME` profiles the server for SECONDS after a 1.5 s start-up, in the
# background, and counts its syscalls, context switches and page faults meanwhile; then
# `perf_report NAME` summarizes both for the run whose JSON is the last line of $results.
perf_events=syscalls:sys_enter_fdatasync,syscalls:sys_enter_pwrite64,syscalls:sys_enter_pread64
perf_events+=,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_futex
perf_events+=,syscalls:sys_enter_epoll_wait,context-switches,page-faults
perf_start() {
  ( sleep 1.5
    perf stat -x, -e "$perf_events" -p "$server_pid" -o "$data.perf.$2.stat" -- sleep "$1" \
      >/dev/null 2>&1 &
    perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$server_pid" \
      -o "$data.perf.$2" -- sleep "$1" >/dev/null 2>&1
    wait ) &
  perf_job=$!
  perf_seconds=$1
}
perf_report() {
  wait "$perf_job" || true
  local run rate
  run="$(tail -n1 "$results")"
  rate="$(field "$run" msg_per_s)"
  echo "== perf profile of the server: $1 (cpu-clock, dwarf call graphs)"
  perf script -i "$data.perf.$1" -F comm,tid,ip,sym 2>/dev/null \
    | "$py" scripts/perf_summary.py --per-msg "$(field "$run" server_cpu_us_per_msg)"
  echo "server events in the ${perf_seconds} s window (per 1000 messages at the run's $rate msg/s):"
  awk -F, -v n="$(awk -v r="$rate" -v s="$perf_seconds" 'BEGIN { print r * s / 1000 }')" \
    '$1 ~ /^[0-9]+$/ { sub(/^syscalls:sys_enter_/, "", $3); printf "  %-16s %9d  %8.2f\n", $3, $1, $1 / n }' \
    "$data.perf.$1.stat"
}

"$py" scripts/kafka_load.py create-topic --bootstrap "$bootstrap" --topic bench-produce --partitions "$partitions"
"$py" scripts/kafka_load.py create-topic --bootstrap "$bootstrap" --topic bench-latency --partitions "$partitions"
server_cpu0="$(cpu_seconds "$server_pid")"

echo
echo "== 1. produce, maximum rate, $messages x 100 B, acks=all, idempotent"
best_rate=0 best_p=0 best=""
for p in $processes; do
  load produce --api batch --topic bench-produce --messages "$messages" --processes "$p"
  line="$(tail -n1 "$results")"
  rate="$(field "$line" msg_per_s)"
  if [ "$rate" -gt "$best_rate" ]; then best_rate=$rate best_p=$p best=$line; fi
done
load produce --api produce --topic bench-produce --messages "$messages" --processes "$best_p"
single="$(tail -n1 "$results")"

echo
half=$((best_rate / 2))
echo "== 2. produce paced at half the best rate: $half msg/s for ${latency_seconds} s, $best_p processes"
load produce --api batch --topic bench-latency --messages $((half * latency_seconds)) \
  --processes "$best_p" --rate "$half"
latency="$(tail -n1 "$results")"
low_rate="${LOW_RATE:-100000}"
echo "-- and at $low_rate msg/s, where the clients are far from using the cores up"
load produce --api batch --topic bench-latency --messages $((low_rate * 5)) \
  --processes "$best_p" --rate "$low_rate"
latency_low="$(tail -n1 "$results")"

echo
consume_messages=$((messages * 2))
echo "== 3. consume $consume_messages messages through Fetch"
best_consume=""
best_crate=0
for p in $consume_processes; do
  load consume --topic bench-produce --messages "$consume_messages" --processes "$p"
  line="$(tail -n1 "$results")"
  rate="$(field "$line" msg_per_s)"
  if [ "$rate" -gt "$best_crate" ]; then best_crate=$rate best_consume=$line; fi
done
echo "-- kcat (librdkafka $(kcat -V 2>&1 | grep -o 'librdkafka [0-9.]*' | head -n1 | cut -d' ' -f2), C) consume, output discarded"
c0="$(cpu_seconds "$server_pid")" t0="$(date +%s.%N)"
kcat -C -b "$bootstrap" -t bench-produce -o beginning -c "$consume_messages" -q -f '' \
  -X fetch.min.bytes=1000000 -X fetch.max.bytes=52428800 -X max.partition.fetch.bytes=10485760 \
  -X queued.min.messages=1000000 -X check.crcs=false
c1="$(cpu_seconds "$server_pid")" t1="$(date +%s.%N)"
kcat_line="$(awk -v n="$consume_messages" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" 'BEGIN {
  s = t1 - t0; printf "kcat consume messages=%d seconds=%.3f msg_per_s=%d server_cpu_us_per_msg=%.3f server_cores=%.2f (includes kcat start-up)",
  n, s, n / s, (c1 - c0) / n * 1e6, (c1 - c0) / s }')"
echo "$kcat_line"

if [ "$perf_ok" = 1 ]; then
  echo
  echo "== 4. perf: the server during a max-rate produce run and a consume run (separate runs)"
  perf_start 3 produce
  load produce --api batch --topic bench-produce --messages "$messages" --processes "$best_p"
  perf_report produce
  perf_start 3 consume
  load consume --topic bench-produce --messages "$consume_messages" --processes 1
  perf_report consume
else
  echo
  echo "== 4. perf: not available here (install linux-perf and allow perf_event_open to profile)"
fi

server_cpu1="$(cpu_seconds "$server_pid")"
echo
echo "== summary ($(nproc) cores; $(cut -d' ' -f1-3 /proc/loadavg) load average now)"
"$py" - "$best" "$single" "$latency" "$latency_low" "$best_consume" <<'EOF'
import json, sys
best, single, lat, low, cons = (json.loads(a) for a in sys.argv[1:])
def cpu(r):
    return (f"server {r['server_cpu_us_per_msg']:.3f} µs CPU/msg ({r['server_cores']:.2f} cores), "
            f"clients {r['client_cpu_us_per_msg']:.3f} µs/msg")
print(f"produce, max:      {best['msg_per_s']:>10,} msg/s  {best['processes']} processes, produce_batch; {cpu(best)}")
print(f"produce, max:      {single['msg_per_s']:>10,} msg/s  {single['processes']} processes, produce() per message; {cpu(single)}")
for r in (lat, low):
    print(f"produce latency at {r['msg_per_s']:,} msg/s: p50 {r['dr_p50_ms']} ms, p99 {r['dr_p99_ms']} ms, "
          f"p99.9 {r['dr_p999_ms']} ms, max {r['dr_max_ms']} ms; {cpu(r)}")
print(f"consume:           {cons['msg_per_s']:>10,} msg/s  {cons['processes']} processes; {cpu(cons)}")
EOF
echo "$kcat_line"
echo "server CPU over the whole script: $(awk -v a="$server_cpu0" -v b="$server_cpu1" 'BEGIN { printf "%.1f", b - a }') s"
