"""Load generator for `weir serve` with real librdkafka clients (confluent-kafka).

What it measures, and how:

- `produce`: P worker processes, each one `confluent_kafka.Producer` (acks=all, idempotent,
  no compression, linger.ms 10, batches up to 1 MB / 100,000 messages) send N values of
  --value-bytes bytes in total, without keys. Each worker first connects, gets its producer
  id and delivers one message to every partition (a new producer's first delivery takes
  ~0.5 s: start-up, not throughput or latency), then all start together at a barrier.
  `--api produce` makes one `produce()` call per message (librdkafka's sticky partitioner
  picks the partitions); `--api batch` hands librdkafka --batch messages per
  `produce_batch()` call, all to one partition, taking the partitions in turn: the same
  librdkafka producer underneath, half the Python cost per message. The rate is N over the
  wall time from the common start to the moment the last worker's `flush()` returned, i.e.
  every message acknowledged (acks=all: fsynced by weir).
  Without --rate the workers send as fast as they can and ask librdkafka for error reports
  only (a Python callback per successful delivery would cost as much as the send). With
  --rate R they pace their sends to R msg/s in total (what is due every millisecond; with
  `--api batch` one partition per linger.ms, as the sticky partitioner does) and every
  message gets a delivery callback: its latency is `msg.latency()`, librdkafka's time from
  the `produce()` call to the delivery report reaching Python, i.e. client queueing,
  linger, the request, weir's fsync and the response (p50/p99/p99.9/max over all workers).
- `consume`: P worker processes, each one `confluent_kafka.Consumer` with partitions
  assigned explicitly (no group rebalance in the timed part), read N messages in total from
  the earliest offsets: the parent splits the first N messages of the topic over the
  partitions (in proportion to what each holds) and each worker reads its partitions up to
  those end offsets, pausing each partition it finished. Rate = N over the wall time from the
  common start to the last worker's last message; `received` also counts the messages
  fetched past an end before the pause took effect. Every message is looked at (error,
  partition, offset), as an application would.
- `create-topic`: creates a topic through the server's CreateTopics (AdminClient).

With --server-pid PID the server's CPU time (utime+stime of /proc/PID/stat, all threads) is
read at the start and end of the timed part: the summary gives server CPU seconds, CPU per
message and the server's share of the run (cores busy). The workers' own CPU time (the
client side) is reported the same way, since on a small machine clients and server share
the cores.

Output: one line per run, `kafka_load MODE key=value ...` in a fixed order, and with --json
one JSON object on the next line. Run with the Weir venv's python:

    ~/.cache/weir/venv/bin/python scripts/kafka_load.py create-topic --bootstrap B --topic t --partitions 8
    ~/.cache/weir/venv/bin/python scripts/kafka_load.py produce --bootstrap B --topic t \\
        --messages 5000000 --value-bytes 100 --processes 2 [--rate 200000] [--server-pid PID]
    ~/.cache/weir/venv/bin/python scripts/kafka_load.py consume --bootstrap B --topic t \\
        --messages 5000000 --processes 2 [--server-pid PID]
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Paced sends go out in bursts at most this far apart (a 1 ms tick keeps bursts small).
PACE_TICK_S = 0.001


def proc_cpu_seconds(pid):
    """utime + stime of every thread of `pid`, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu_seconds():
    t = os.times()
    return t.user + t.system


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


def split(total, parts):
    """`total` split into `parts` near-equal integers."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ---------------------------------------------------------------------------------------
# produce


def producer_config(args, paced):
    conf = {
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "none",
        "linger.ms": args.linger_ms,
        # One batch per partition and request up to message.max.bytes (1 MB default).
        "batch.size": 1_000_000,
        "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 2_097_151,
        "statistics.interval.ms": 0,
    }
    if not paced:
        # Count failures only: a Python callback per successful delivery would cost the
        # client as much CPU as the produce() call itself.
        conf["delivery.report.only.error"] = True
    return conf


def produce_worker(args, index, count, rate, barrier, out):
    p = Producer(producer_config(args, paced=rate is not None))
    topic, value = args.topic, b"x" * args.value_bytes
    # Warm up before the clock starts: connect, learn the partitions, get the idempotent
    # producer id, and deliver one message to every partition (the first delivery of a new
    # producer takes ~0.5 s, which is start-up, not steady-state latency).
    p.list_topics(topic, timeout=10)
    for part in range(args.partitions_seen):
        p.produce(topic, value, partition=part)
    if p.flush(30):
        raise SystemExit("kafka_load: warm-up messages not delivered in 30 s")
    errors = []
    latencies = []

    def on_error(err, msg):
        if err is not None:
            errors.append(str(err))

    barrier.wait()
    cpu0, t0 = own_cpu_seconds(), time.perf_counter()
    produce, produce_batch, poll = p.produce, p.produce_batch, p.poll
    clock = time.perf_counter
    nparts = args.partitions_seen
    if rate is None and args.api == "produce":
        sent = 0
        while sent < count:
            chunk = min(10_000, count - sent)
            for _ in range(chunk):
                try:
                    produce(topic, value, on_delivery=on_error)
                except BufferError:
                    poll(0.01)
                    produce(topic, value, on_delivery=on_error)
            sent += chunk
            poll(0)
    elif rate is None:
        # produce_batch: one librdkafka call per --batch messages, all to one partition, the
        # partitions taken in turn (offset by the worker's index so workers spread out).
        batch = [{"value": value} for _ in range(args.batch)]
        sent, part = 0, index
        while sent < count:
            msgs = batch if count - sent >= len(batch) else batch[:count - sent]
            try:
                queued = produce_batch(topic, msgs, partition=part % nparts,
                                       on_delivery=on_error)
            except BufferError:
                poll(0.01)
                continue
            if queued != len(msgs):
                raise SystemExit(f"kafka_load: produce_batch queued {queued} of {len(msgs)}")
            sent += queued
            part += 1
            poll(0)
    else:
        # Paced: every tick sends what is due by then. librdkafka stamps each message when
        # produce() enqueues it, and msg.latency() (read as the delivery report reaches
        # Python) is the time from that produce() call to the callback.
        def report(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                latencies.append(msg.latency())

        batch = [{"value": value} for _ in range(args.batch)]
        sent, tick = 0, t0
        while sent < count:
            due = min(count, int((clock() - t0) * rate) + 1)
            try:
                while sent < due:
                    if args.api == "produce":
                        produce(topic, value, on_delivery=report)
                        sent += 1
                    else:
                        # One partition per linger.ms, as the sticky partitioner does.
                        part = index + int((clock() - t0) * 1e3 / max(1, args.linger_ms))
                        msgs = batch[:min(due - sent, len(batch))]
                        sent += produce_batch(topic, msgs, partition=part % nparts,
                                              on_delivery=report)
            except BufferError:
                pass  # librdkafka's queue is full: the client cannot keep up; poll below
            # Wait for the next tick, serving delivery reports meanwhile. poll() returns early
            # when it served a report, hence the loop; its timeout is in whole milliseconds
            # (a shorter one is 0, a busy poll), hence the ceiling.
            tick = max(tick + PACE_TICK_S, clock() - PACE_TICK_S)
            poll(0)
            while (wait := tick - clock()) > 0:
                poll(math.ceil(wait * 1e3) / 1e3)
    left = p.flush(120)
    t1 = time.perf_counter()
    out.put({"start": t0, "end": t1, "count": count, "left": left, "errors": errors[:5],
             "error_count": len(errors), "cpu": own_cpu_seconds() - cpu0,
             "latencies": latencies})


# ---------------------------------------------------------------------------------------
# consume


def consumer_config(args):
    return {
        "bootstrap.servers": args.bootstrap,
        "group.id": f"kafka-load-{os.getpid()}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Big fetches: wait for 1 MB (or 100 ms), up to 50 MB a response, 10 MB a partition;
        # keep 100,000 messages a partition queued, and when a queue is full try again after
        # 10 ms (librdkafka >= 2.4 waits fetch.queue.backoff.ms = 1 s by default: measured
        # ~230,000 msg/s instead of ~1,000,000 for one consumer process).
        "fetch.min.bytes": 1_000_000,
        "fetch.wait.max.ms": 100,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 10_485_760,
        "queued.min.messages": 100_000,
        "queued.max.messages.kbytes": 1_048_576,
        "fetch.queue.backoff.ms": 10,
        "check.crcs": False,
        "enable.partition.eof": False,
    }


def consume_worker(args, ranges, barrier, out):
    """Reads [start, end) of each (partition, start, end) in `ranges`."""
    c = Consumer(consumer_config(args))
    ends = {part: end for part, _, end in ranges if end > 0}
    count = sum(end - start for _, start, end in ranges)
    c.list_topics(args.topic, timeout=10)  # connect before the clock starts
    barrier.wait()
    cpu0, t0 = own_cpu_seconds(), time.perf_counter()
    c.assign([TopicPartition(args.topic, part, start) for part, start, end in ranges
              if end > start])
    got, errors, done = 0, [], {part for part, start, end in ranges if end <= start}
    consume = c.consume
    deadline = time.monotonic() + args.timeout
    while len(done) < len(ranges) and time.monotonic() < deadline:
        batch = consume(10_000, 0.5)
        if not batch:
            continue
        # The last message of a partition in this batch tells how far it got. Messages past a
        # partition's end (fetched before it was paused) count in `received`, not the rate.
        last = {}
        for m in batch:
            if m.error() is not None:
                errors.append(str(m.error()))
                continue
            last[m.partition()] = m.offset()
        got += len(batch)
        finished = [part for part, off in last.items() if off + 1 >= ends[part]
                    and part not in done]
        if finished:
            # Stop fetching what is past the end (a real consumer would keep going).
            c.pause([TopicPartition(args.topic, part) for part in finished])
            done.update(finished)
    t1 = time.perf_counter()
    c.close()
    out.put({"start": t0, "end": t1, "count": count, "got": got, "errors": errors[:5],
             "error_count": len(errors), "cpu": own_cpu_seconds() - cpu0,
             "complete": len(done) == len(ranges)})


def partition_count(args):
    c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "kafka-load-plan"})
    meta = c.list_topics(args.topic, timeout=10).topics[args.topic]
    c.close()
    if meta.error is not None:
        raise SystemExit(f"kafka_load: topic {args.topic}: {meta.error}")
    return len(meta.partitions)


def plan_consume(args):
    """Splits the first --messages of the topic (from each partition's low watermark) over
    the partitions and the partitions over the workers: a list of (partition, start, end)
    per worker."""
    c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "kafka-load-plan"})
    meta = c.list_topics(args.topic, timeout=10).topics[args.topic]
    if meta.error is not None:
        raise SystemExit(f"kafka_load: topic {args.topic}: {meta.error}")
    parts = sorted(meta.partitions)
    marks = {p: c.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10) for p in parts}
    c.close()
    available = sum(hi - lo for lo, hi in marks.values())
    if available < args.messages:
        raise SystemExit(f"kafka_load: topic {args.topic} holds {available} messages, "
                         f"fewer than --messages {args.messages}")
    # Take from each partition in proportion to what it holds, the rest from the fullest.
    take = {p: (marks[p][1] - marks[p][0]) * args.messages // available for p in parts}
    short = args.messages - sum(take.values())
    for p in sorted(parts, key=lambda p: marks[p][1] - marks[p][0] - take[p], reverse=True):
        if short == 0:
            break
        take[p] += 1
        short -= 1
    workers = [[] for _ in range(min(args.processes, len(parts)))]
    for i, p in enumerate(parts):
        workers[i % len(workers)].append((p, marks[p][0], marks[p][0] + take[p]))
    return workers


# ---------------------------------------------------------------------------------------
# runs


def run(args):
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    if args.mode == "produce":
        args.partitions_seen = partition_count(args)
        counts = split(args.messages, args.processes)
        rates = split(args.rate, args.processes) if args.rate else [None] * args.processes
        jobs = [(produce_worker, (args, i, n, r)) for i, (n, r) in enumerate(zip(counts, rates))]
    else:
        jobs = [(consume_worker, (args, ranges)) for ranges in plan_consume(args)]
    barrier = ctx.Barrier(len(jobs) + 1)
    procs = [ctx.Process(target=fn, args=a + (barrier, out)) for fn, a in jobs]
    for p in procs:
        p.start()
    barrier.wait(timeout=60)
    server0 = proc_cpu_seconds(args.server_pid) if args.server_pid else None
    results = [out.get(timeout=args.timeout + 150) for _ in procs]
    server1 = proc_cpu_seconds(args.server_pid) if args.server_pid else None
    for p in procs:
        p.join()
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    wall = end - start
    n = sum(r["count"] for r in results)
    summary = {"mode": args.mode, "topic": args.topic, "processes": len(procs),
               "api": args.api if args.mode == "produce" else None,
               "messages": n, "value_bytes": args.value_bytes, "seconds": round(wall, 3),
               "msg_per_s": round(n / wall), "mb_per_s": round(n * args.value_bytes / wall / 1e6, 1),
               "errors": sum(r["error_count"] for r in results),
               "first_errors": [e for r in results for e in r["errors"]][:5]}
    if args.mode == "produce":
        summary["undelivered"] = sum(r["left"] for r in results)
        summary["target_rate"] = args.rate
        if args.rate:
            xs = sorted(x for r in results for x in r["latencies"])
            summary["latency_samples"] = len(xs)
            for q, label in ((0.5, "p50"), (0.99, "p99"), (0.999, "p999"), (1.0, "max")):
                summary[f"dr_{label}_ms"] = round(percentile(xs, q) * 1e3, 2)
    else:
        summary["received"] = sum(r["got"] for r in results)
        summary["complete"] = all(r["complete"] for r in results)
    client_cpu = sum(r["cpu"] for r in results)
    summary["client_cpu_s"] = round(client_cpu, 2)
    summary["client_cpu_us_per_msg"] = round(client_cpu / n * 1e6, 3)
    if server0 is not None:
        # The server's CPU is sampled by the parent just after the barrier and just after the
        # last result; the window is slightly wider than `seconds` (queue hand-off only).
        cpu = server1 - server0
        summary["server_cpu_s"] = round(cpu, 2)
        summary["server_cpu_us_per_msg"] = round(cpu / n * 1e6, 3)
        summary["server_cores"] = round(cpu / wall, 2)
    return summary


def line(s):
    keys = ["api", "processes", "messages", "seconds", "msg_per_s", "mb_per_s"]
    if s["mode"] == "produce":
        if s.get("target_rate"):
            keys += ["target_rate", "dr_p50_ms", "dr_p99_ms", "dr_p999_ms", "dr_max_ms"]
        keys += ["undelivered"]
    else:
        keys += ["received", "complete"]
    keys += ["errors", "client_cpu_us_per_msg", "server_cpu_s", "server_cpu_us_per_msg",
             "server_cores"]
    return f"kafka_load {s['mode']} " + " ".join(f"{k}={s[k]}" for k in keys if s.get(k) is not None)


def create_topic(args):
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    fut = admin.create_topics([NewTopic(args.topic, num_partitions=args.partitions,
                                        replication_factor=1)])[args.topic]
    try:
        fut.result(timeout=30)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    print(f"kafka_load create-topic topic={args.topic} partitions={args.partitions}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["produce", "consume", "create-topic"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--rate", type=int, help="produce: total msg/s to pace to (latency run)")
    ap.add_argument("--api", choices=["produce", "batch"], default="produce",
                    help="produce: one produce() call per message (default) or "
                         "produce_batch() of --batch messages to one partition at a time")
    ap.add_argument("--batch", type=int, default=1000, help="messages per produce_batch()")
    ap.add_argument("--linger-ms", type=int, default=10, help="produce: librdkafka linger.ms")
    ap.add_argument("--partitions", type=int, default=8, help="create-topic: partitions")
    ap.add_argument("--server-pid", type=int, help="sample this process's CPU around the run")
    ap.add_argument("--timeout", type=float, default=300, help="seconds a worker may take")
    ap.add_argument("--json", action="store_true", help="also print the summary as JSON")
    args = ap.parse_args()
    if args.mode == "create-topic":
        create_topic(args)
        return
    s = run(args)
    print(line(s), flush=True)
    if args.json:
        print(json.dumps(s), flush=True)
    bad = s["errors"] or s.get("undelivered") or s.get("complete") is False
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
