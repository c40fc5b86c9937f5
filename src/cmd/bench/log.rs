//! `weir bench produce|consume|rebalance`: the embedded log's append and read throughput and
//! latency, and a consumer group's rebalance time.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use weir_log::storage::{DirLock, FileRef, OpenMode, StorageFile};
use weir_log::{
    BatchBuilder, FlushPolicy, Log, LogOptions, Offset, PartitionId, Storage, Timestamp,
};

use crate::cli::{BenchConsumeArgs, BenchProduceArgs, BenchRebalanceArgs};

use super::*;

/// The real file system, counting `fdatasync`s so the report can say how many acks each cost.
#[derive(Debug, Default)]
struct CountingFs {
    syncs: Arc<AtomicU64>,
}

#[derive(Debug)]
struct CountingFile {
    inner: FileRef,
    syncs: Arc<AtomicU64>,
}

impl StorageFile for CountingFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> std::io::Result<()> {
        self.inner.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
}

impl Storage for CountingFs {
    fn create_dir_all(&self, p: &Path) -> std::io::Result<()> {
        weir_log::FsStorage.create_dir_all(p)
    }
    fn open(&self, p: &Path, mode: OpenMode) -> std::io::Result<FileRef> {
        Ok(Arc::new(CountingFile {
            inner: weir_log::FsStorage.open(p, mode)?,
            syncs: self.syncs.clone(),
        }))
    }
    fn remove_file(&self, p: &Path) -> std::io::Result<()> {
        weir_log::FsStorage.remove_file(p)
    }
    fn remove_dir_all(&self, p: &Path) -> std::io::Result<()> {
        weir_log::FsStorage.remove_dir_all(p)
    }
    fn rename(&self, a: &Path, b: &Path) -> std::io::Result<()> {
        weir_log::FsStorage.rename(a, b)
    }
    fn list_dir(&self, p: &Path) -> std::io::Result<Vec<String>> {
        weir_log::FsStorage.list_dir(p)
    }
    fn sync_dir(&self, p: &Path) -> std::io::Result<()> {
        weir_log::FsStorage.sync_dir(p)
    }
    fn exists(&self, p: &Path) -> bool {
        weir_log::FsStorage.exists(p)
    }
    fn lock_dir(&self, p: &Path) -> std::io::Result<Option<Box<dyn DirLock>>> {
        weir_log::FsStorage.lock_dir(p)
    }
}
pub fn produce(data_dir: &Path, a: BenchProduceArgs) -> Result<()> {
    let flush: FlushPolicy = a
        .flush
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--flush {}: {e}", a.flush))?;
    if a.producers == 0 || a.partitions == 0 || a.records == 0 {
        bail!("--records, --partitions and --producers must be at least 1");
    }
    let scratch = Scratch::new(data_dir, "produce")?;
    let fs = CountingFs::default();
    let syncs = fs.syncs.clone();
    let log = Log::open_with(
        &scratch.0,
        LogOptions {
            storage: Arc::new(fs),
            cleaner_interval: None,
            ..LogOptions::default()
        },
    )?;
    let cfg = weir_log::TopicConfig::parse_pairs(&[
        format!("flush={flush}"),
        "max.message.bytes=16777216".to_string(),
    ])?;
    log.create_topic("bench", a.partitions, cfg)?;
    if let Some(txn_ms) = a.transactional {
        return produce_transactional(&log, &syncs, &a, Duration::from_millis(txn_ms.max(1)));
    }
    let value = Arc::new(payload(a.record_bytes));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reporter = progress("produce", done.clone(), a.records, stop.clone());
    let syncs_before = syncs.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut handles = Vec::new();
    for id in 0..a.producers {
        let n = a.records / u64::from(a.producers)
            + u64::from(u64::from(id) < a.records % u64::from(a.producers));
        let (log, value, done) = (log.clone(), value.clone(), done.clone());
        let (partitions, batch_bytes, in_flight) =
            (a.partitions, a.batch_bytes, a.in_flight.max(1));
        let idempotent = a.idempotent;
        handles.push(std::thread::spawn(
            move || -> Result<(Histogram<u64>, u64)> {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let mut pending: VecDeque<(weir_log::AppendTicket, Instant, u64)> = VecDeque::new();
                let mut sent = 0u64;
                let mut appends = 0u64;
                let mut partition = id % partitions;
                let now = Timestamp(start_ms());
                // Idempotent producers stamp (producer id, epoch, sequence) on every batch, and
                // the partition checks them: the cost the benchmark compares.
                let identity = if idempotent {
                    Some(log.init_producer_id()?)
                } else {
                    None
                };
                let mut sequences = vec![0i32; partitions as usize];
                while sent < n {
                    let mut b = BatchBuilder::with_capacity(batch_bytes + 1024);
                    if let Some((producer_id, producer_epoch)) = identity {
                        b = b.producer(weir_log::ProducerFields {
                            producer_id,
                            producer_epoch,
                            base_sequence: sequences[partition as usize],
                        });
                    }
                    while sent < n && b.size() < batch_bytes {
                        b.push_parts(None, Some(&value), &[], now);
                        sent += 1;
                    }
                    let count = b.count() as u64;
                    sequences[partition as usize] += count as i32;
                    let ticket = log.submit_batch("bench", PartitionId(partition), b.finish())?;
                    pending.push_back((ticket, Instant::now(), count));
                    appends += 1;
                    partition = (partition + 1) % partitions;
                    while pending.len() >= in_flight {
                        settle(&mut pending, &mut hist, &done)?;
                    }
                }
                while !pending.is_empty() {
                    settle(&mut pending, &mut hist, &done)?;
                }
                Ok((hist, appends))
            },
        ));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut appends = 0;
    for h in handles {
        let (ph, n) = h
            .join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
        hist.add(ph)?;
        appends += n;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    let fsyncs = syncs.load(Ordering::Relaxed) - syncs_before;
    let bytes_on_disk: u64 = log
        .describe_topic("bench")?
        .partitions
        .iter()
        .map(|p| p.bytes)
        .sum();
    let records = a.records as f64;
    println!(
        "bench produce: {} records x {} B, {} partition(s), {} {}producer(s), flush={}, batch {} B, {} in flight",
        a.records,
        a.record_bytes,
        a.partitions,
        a.producers,
        if a.idempotent { "idempotent " } else { "" },
        flush,
        a.batch_bytes,
        a.in_flight
    );
    println!(
        "  throughput: {:.0} records/s, {:.1} MB/s of values, {:.1} MB/s written",
        records / secs,
        records * a.record_bytes as f64 / 1e6 / secs,
        bytes_on_disk as f64 / 1e6 / secs
    );
    println!(
        "  append latency (submit to ack, {} appends): p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        appends,
        hist.value_at_quantile(0.50) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
    let per_sync = if fsyncs == 0 {
        "no fsync".to_string()
    } else {
        format!("{:.1} appends per fsync", appends as f64 / fsyncs as f64)
    };
    println!("  fdatasync calls: {fsyncs} ({per_sync}); elapsed {secs:.2} s");
    drop(log);
    drop(scratch);
    Ok(())
}

pub fn consume(data_dir: &Path, a: BenchConsumeArgs) -> Result<()> {
    if a.records == 0 {
        bail!("--records must be at least 1");
    }
    let scratch = Scratch::new(data_dir, "consume")?;
    let log = Log::open_with(&scratch.0, LogOptions::without_cleaner())?;
    log.create_topic(
        "bench",
        1,
        weir_log::TopicConfig::parse_pairs(&["flush=os"])?,
    )?;
    let value = payload(a.record_bytes);
    eprintln!(
        "  writing {} records of {} B ...",
        a.records, a.record_bytes
    );
    let mut written = 0u64;
    let now = Timestamp(start_ms());
    let mut tickets = VecDeque::new();
    while written < a.records {
        let mut b = BatchBuilder::with_capacity(256 * 1024 + 1024);
        while written < a.records && b.size() < 256 * 1024 {
            b.push_parts(None, Some(&value), &[], now);
            written += 1;
        }
        tickets.push_back(log.submit_batch("bench", PartitionId(0), b.finish())?);
        if tickets.len() > 8 {
            if let Some(t) = tickets.pop_front() {
                t.wait()?;
            }
        }
    }
    for t in tickets {
        t.wait()?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reporter = progress("consume", done.clone(), a.records, stop.clone());
    let start = Instant::now();
    let mut at = Offset(0);
    let mut records = 0u64;
    let mut value_bytes = 0u64;
    let mut fetch_bytes = 0u64;
    loop {
        let f = log.read("bench", PartitionId(0), at, 1024 * 1024)?;
        if f.is_empty() {
            break;
        }
        fetch_bytes += f.batches.len() as u64;
        for r in f.records() {
            let r = r?;
            value_bytes += r.value.map_or(0, <[u8]>::len) as u64;
            records += 1;
        }
        done.store(records, Ordering::Relaxed);
        at = f.next_offset();
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = reporter.join();
    if records != a.records {
        bail!("read {records} records, wrote {}", a.records);
    }
    println!("bench consume: {} records x {} B from the page cache (1 MiB fetches, CRC-checked, every record decoded)", a.records, a.record_bytes);
    println!(
        "  throughput: {:.0} records/s, {:.1} MB/s of values, {:.1} MB/s of batches; elapsed {secs:.2} s",
        records as f64 / secs,
        value_bytes as f64 / 1e6 / secs,
        fetch_bytes as f64 / 1e6 / secs
    );
    drop(log);
    drop(scratch);
    Ok(())
}

/// One member of the measured group: polls until told to leave (cleanly) or stop, and
/// publishes its generation and assignment size after each poll.
fn rebalance_member(
    coord: weir_coord::GroupCoordinator,
    group: String,
    leave: Arc<AtomicBool>,
    view: Arc<std::sync::Mutex<(i32, usize)>>,
) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        let mut cfg = weir_coord::ConsumerConfig::new(group);
        cfg.heartbeat_interval = Duration::from_millis(100);
        cfg.auto_commit_interval = None;
        let mut c = weir_coord::Consumer::new(&coord, cfg);
        c.subscribe(&["bench"])?;
        while !leave.load(Ordering::Acquire) {
            c.poll(Duration::from_millis(5))?;
            let generation = c.membership().1;
            *view.lock().unwrap_or_else(|e| e.into_inner()) = (generation, c.assignment().len());
        }
        c.close()?;
        Ok(())
    })
}

pub fn rebalance(data_dir: &Path, a: BenchRebalanceArgs) -> Result<()> {
    if a.members < 2 || a.partitions == 0 || a.rounds == 0 {
        bail!("--members must be at least 2, --partitions and --rounds at least 1");
    }
    let scratch = Scratch::new(data_dir, "rebalance")?;
    let log = Log::open_with(&scratch.0, LogOptions::without_cleaner())?;
    log.create_topic("bench", a.partitions, Default::default())?;
    let coord = weir_coord::GroupCoordinator::start(&log)?;
    let mut times = Vec::new();
    for round in 0..a.rounds {
        let group = format!("bench-{round}");
        let flags: Vec<Arc<AtomicBool>> = (0..a.members)
            .map(|_| Arc::new(AtomicBool::new(false)))
            .collect();
        let views: Vec<Arc<std::sync::Mutex<(i32, usize)>>> =
            (0..a.members).map(|_| Arc::default()).collect();
        let handles: Vec<_> = (0..a.members)
            .map(|i| {
                rebalance_member(
                    coord.clone(),
                    group.clone(),
                    flags[i].clone(),
                    views[i].clone(),
                )
            })
            .collect();
        let stable = |members: &[Arc<std::sync::Mutex<(i32, usize)>>]| -> Option<i32> {
            let vs: Vec<(i32, usize)> = members
                .iter()
                .map(|v| *v.lock().unwrap_or_else(|e| e.into_inner()))
                .collect();
            let g = vs.first()?.0;
            (g > 0
                && vs.iter().all(|v| v.0 == g)
                && vs.iter().map(|v| v.1).sum::<usize>() == a.partitions as usize)
                .then_some(g)
        };
        let wait = |members: &[Arc<std::sync::Mutex<(i32, usize)>>], after: i32| -> Result<i32> {
            let t0 = Instant::now();
            loop {
                if let Some(g) = stable(members).filter(|g| *g > after) {
                    return Ok(g);
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    bail!("the group did not stabilise within 30 s");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let generation = wait(&views, 0)?;
        let t0 = Instant::now();
        flags[0].store(true, Ordering::Release);
        wait(&views[1..], generation)?;
        times.push(t0.elapsed());
        for f in &flags {
            f.store(true, Ordering::Release);
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("member thread panicked"))??;
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "bench rebalance: {} members, {} partitions, one member leaves cleanly ({} rounds)",
        a.members, a.partitions, a.rounds
    );
    println!(
        "  until the remaining members hold every partition in a new generation: median {:.1} ms, max {:.1} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    drop(coord);
    drop(log);
    drop(scratch);
    Ok(())
}

/// `bench produce --transactional MS`: each producer writes in transactions it commits every
/// MS milliseconds; reports throughput and the fsyncs each commit cost (counted around the
/// commit alone, after the transaction's data was acknowledged).
fn produce_transactional(
    log: &Log,
    syncs: &Arc<AtomicU64>,
    a: &BenchProduceArgs,
    every: Duration,
) -> Result<()> {
    let (_groups, txns) = weir_coord::start(log)?;
    let value = Arc::new(payload(a.record_bytes));
    let start = Instant::now();
    let mut handles = Vec::new();
    for id in 0..a.producers {
        let n = a.records / u64::from(a.producers)
            + u64::from(u64::from(id) < a.records % u64::from(a.producers));
        let (txns, value, syncs) = (txns.clone(), value.clone(), syncs.clone());
        let (partitions, batch_bytes) = (a.partitions, a.batch_bytes);
        handles.push(std::thread::spawn(
            move || -> Result<(u64, u64, Histogram<u64>)> {
                let mut p = weir_coord::TransactionalProducer::new(
                    &txns,
                    &format!("bench-{id}"),
                    Duration::from_secs(60),
                )?;
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let (mut sent, mut commits, mut commit_syncs) = (0u64, 0u64, 0u64);
                let mut partition = id % partitions;
                let now = Timestamp(start_ms());
                while sent < n {
                    p.begin()?;
                    let t0 = Instant::now();
                    while sent < n && t0.elapsed() < every {
                        let mut added = 0u64;
                        p.submit_with("bench", PartitionId(partition), |b| {
                            while sent + added < n && b.size() < batch_bytes {
                                b.push_parts(None, Some(&value), &[], now);
                                added += 1;
                            }
                        })?;
                        sent += added;
                        partition = (partition + 1) % partitions;
                    }
                    p.flush()?;
                    let before = syncs.load(Ordering::Relaxed);
                    let c0 = Instant::now();
                    p.commit()?;
                    hist.saturating_record(c0.elapsed().as_micros() as u64);
                    commit_syncs += syncs.load(Ordering::Relaxed) - before;
                    commits += 1;
                }
                Ok((commits, commit_syncs, hist))
            },
        ));
    }
    let (mut commits, mut commit_syncs) = (0u64, 0u64);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for h in handles {
        let (c, s, ph) = h
            .join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
        commits += c;
        commit_syncs += s;
        hist.add(ph)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let records = a.records as f64;
    println!(
        "bench produce: {} records x {} B, {} partition(s), {} transactional producer(s) committing every {} ms, flush={}",
        a.records,
        a.record_bytes,
        a.partitions,
        a.producers,
        every.as_millis(),
        a.flush
    );
    println!(
        "  throughput: {:.0} records/s, {:.1} MB/s of values; {commits} commits",
        records / secs,
        records * a.record_bytes as f64 / 1e6 / secs
    );
    println!(
        "  commit: p50 {:.2} ms, p99 {:.2} ms; {:.1} fdatasyncs per commit (markers on {} partition(s) + 2 transaction-state appends{})",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        commit_syncs as f64 / commits.max(1) as f64,
        a.partitions,
        if a.producers > 1 { "; other producers' fsyncs overlap, use --producers 1 to count" } else { "" }
    );
    Ok(())
}
