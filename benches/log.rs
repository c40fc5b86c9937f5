//! Criterion benchmarks of the log's hot paths: batch encoding, batch decoding with CRC
//! checks, murmur2, and appends through the group-commit writer (flush=os) and reads.
//! Run: `cargo bench --bench log`. The end-to-end figures come from `weir bench`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weir_log::{BatchBuilder, BatchView, Log, LogOptions, Offset, PartitionId, Timestamp};

const RECORDS_PER_BATCH: u64 = 1000;

fn batch_of(n: u64, value: &[u8]) -> weir_log::EncodedBatch {
    let mut b = BatchBuilder::with_capacity(n as usize * (value.len() + 8) + 64);
    for _ in 0..n {
        b.push_parts(None, Some(value), &[], Timestamp(1_700_000_000_000));
    }
    b.finish()
}

fn codec(c: &mut Criterion) {
    let value = vec![b'x'; 100];
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(RECORDS_PER_BATCH));
    g.bench_function("encode 1000 x 100 B", |b| {
        b.iter(|| black_box(batch_of(RECORDS_PER_BATCH, &value)))
    });
    let batch = batch_of(RECORDS_PER_BATCH, &value);
    g.bench_function("crc + decode 1000 x 100 B", |b| {
        b.iter(|| {
            let v = BatchView::parse(batch.as_bytes()).expect("batch");
            v.verify_crc().expect("crc");
            let mut n = 0usize;
            for r in v.records() {
                n += r.expect("record").value.map_or(0, <[u8]>::len);
            }
            black_box(n)
        })
    });
    g.finish();
    c.bench_function("murmur2 16 B key", |b| {
        b.iter(|| {
            black_box(weir_log::partitioner::murmur2(black_box(
                b"customer-0012345",
            )))
        })
    });
}

fn append_and_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open_with(dir.path(), LogOptions::without_cleaner()).expect("log");
    log.create_topic(
        "b",
        1,
        weir_log::TopicConfig::parse_pairs(&["flush=os"]).expect("cfg"),
    )
    .expect("topic");
    let value = vec![b'x'; 100];
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Elements(RECORDS_PER_BATCH));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("append 1000 x 100 B, flush=os", |b| {
        b.iter(|| {
            let t = log
                .submit_batch("b", PartitionId(0), batch_of(RECORDS_PER_BATCH, &value))
                .expect("submit");
            black_box(t.wait().expect("ack"))
        })
    });
    let end = log.latest_offset("b", PartitionId(0)).expect("end").0;
    let mut at = 0i64;
    g.bench_function("read ~1000 x 100 B from page cache", |b| {
        b.iter(|| {
            let f = log
                .read("b", PartitionId(0), Offset(at), 110 * 1000)
                .expect("read");
            let n = f.records().count();
            at = f.next_offset().0;
            if at >= end {
                at = 0;
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, codec, append_and_read);
criterion_main!(benches);
