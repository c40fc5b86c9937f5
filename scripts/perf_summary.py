"""Summarizes a call-graph CPU profile of `weir serve` into where the time goes.

Input: the text of `perf script -F comm,tid,ip,sym` on stdin, from a profile taken with
`perf record -e cpu-clock --call-graph dwarf -p PID` (a software clock, since the machines
Weir is measured on are VMs without hardware counters; dwarf unwinding, since release builds
have no frame pointers). Each sample is one stack; it is put in the first bucket of BUCKETS
whose pattern matches any of its frames (so the order of BUCKETS is a priority: an fsync's
kernel frames count as the fsync, not as "kernel"), and the output gives, in percent of the
samples: the split by thread kind (tokio workers `weir-serve`, partition writers `weir-w-*`,
fsync threads `weir-s-*`), the buckets, and the hottest leaf functions (inlined ones by
their own name).

    perf script -i perf.data -F comm,tid,ip,sym | python3 scripts/perf_summary.py [--per-msg US]

With --per-msg (the server's CPU microseconds per message of the run) each bucket is also
given in nanoseconds per message.
"""

import argparse
import collections
import re
import sys

# (bucket, regex over one frame's symbol); first match over the priority order wins.
BUCKETS = [
    ("fsync (fdatasync of segment files, incl. ext4 writeback)", r"fdatasync|do_fsync|run_syncer"),
    ("log write: pwrite into the page cache (ext4)", r"pwrite|write_all_at"),
    ("CRC32C (produce: checking batches; fetch: checking batches read)", r"crc32c"),
    ("produce: decode/validate every record", r"BatchView::validate|EncodedBatch::from_bytes"),
    ("produce: copy request batch to a Vec (to_vec)", r"^to_vec|slice_to_vec"),
    ("log writer: gather batches into its buffer", r"weir_log::writer::Writer::"),
    ("append hand-off to the writers (queue, futex wake)",
     r"AppendQueue|Log::enqueue|Log::submit_batch|AppendTicket"),
    ("socket read (recv)", r"recvfrom|recvmsg|poll_read"),
    ("socket write (send)", r"sendto|sendmsg|writev|poll_write|write_all"),
    ("fresh memory: zero-filling, page faults", r"alloc_zeroed|from_elem|exc_page_fault"),
    ("fetch: pread from the page cache", r"read_full_at|pread"),
    ("response encode (incl. copying fetched batches)", r"Encodable|encode|respond"),
    ("request decode (kafka_protocol)", r"Decodable|decode|FrameReader"),
    ("fetch and log: other (index seek, offsets, metrics)", r"weir_kafka::api::fetch|weir_log::"),
    ("allocation (mimalloc)", r"^mi_|^_mi_|malloc|^free|realloc"),
    ("metrics", r"weir_kafka::metrics"),
    ("runtime: scheduling, wakeups, idle (tokio, futex, epoll)",
     r"tokio::|futex|epoll|schedule|finish_task_switch|park"),
]
# Thread names: tokio workers are `weir-serve`, a partition's writer `weir-w-TOPIC-N` and its
# fsync thread `weir-s-TOPIC-N` (truncated to 15 characters by the kernel).
THREADS = [("weir-w-", "weir-w-* (partition writers)"), ("weir-s-", "weir-s-* (fsync threads)"),
           ("weir-serve", "weir-serve (tokio workers: network, requests)")]
COMPILED = [(name, re.compile(rx)) for name, rx in BUCKETS]


def samples(lines):
    """Yields (comm, [frames leaf first]) from `perf script` text."""
    comm, frames = None, []
    for line in lines:
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
        elif not line[0].isspace():
            comm, frames = line.split()[0], []
        else:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                frames.append(parts[1])
    if comm is not None:
        yield comm, frames


def bucket(frames):
    for name, rx in COMPILED:
        if any(rx.search(f) for f in frames):
            return name
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-msg", type=float, help="server CPU µs per message of the run")
    ap.add_argument("--top", type=int, default=15, help="leaf functions to list")
    args = ap.parse_args()
    threads, buckets, leaves = (collections.Counter() for _ in range(3))
    n = 0
    for comm, frames in samples(sys.stdin):
        n += 1
        threads[next((name for prefix, name in THREADS if comm.startswith(prefix)), comm)] += 1
        buckets[bucket(frames)] += 1
        leaves[frames[0].replace(" (inlined)", "")[:100] if frames else "?"] += 1
    if n == 0:
        print("perf_summary: no samples")
        return

    def show(title, counter, limit=None, per_msg=False):
        print(title)
        for name, c in counter.most_common(limit):
            extra = ""
            if per_msg and args.per_msg:
                extra = f"  {c / n * args.per_msg * 1e3:7.0f} ns/msg"
            print(f"  {c * 100 / n:5.1f}%  {name}{extra}")

    print(f"perf_summary: {n} samples")
    show("by thread:", threads)
    show("by activity (first match in priority order):", buckets, per_msg=True)
    show(f"top {args.top} leaf functions:", leaves, args.top)


if __name__ == "__main__":
    main()
