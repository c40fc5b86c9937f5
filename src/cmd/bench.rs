//! `weir bench produce|consume`: throughput and latency of the embedded log, in a scratch
//! directory inside the data directory (removed afterwards), so the figures are for the same
//! disk the user's data is on.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use weir_log::storage::{DirLock, FileRef, OpenMode, StorageFile};
use weir_log::{
    BatchBuilder, FlushPolicy, Log, LogOptions, Offset, PartitionId, Storage, Timestamp,
};

use crate::cli::{
    BenchConsumeArgs, BenchPipelineArgs, BenchProduceArgs, BenchRebalanceArgs, BenchRestartArgs,
};

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

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(data_dir: &Path, what: &str) -> Result<Scratch> {
        let p = data_dir.join(format!(".bench-{what}-{}", std::process::id()));
        if p.exists() {
            std::fs::remove_dir_all(&p)?;
        }
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn payload(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Prints progress to stderr every second until stopped.
fn progress(
    label: &'static str,
    done: Arc<AtomicU64>,
    total: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let secs = start.elapsed().as_secs();
            if secs >= 1 && start.elapsed().subsec_millis() < 200 {
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "  {label}: {n}/{total} records ({:.0}%) after {secs} s",
                    n as f64 * 100.0 / total.max(1) as f64
                );
            }
        }
    })
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

fn start_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn settle(
    pending: &mut VecDeque<(weir_log::AppendTicket, Instant, u64)>,
    hist: &mut Histogram<u64>,
    done: &AtomicU64,
) -> Result<()> {
    let Some((t, at, n)) = pending.pop_front() else {
        return Ok(());
    };
    t.wait()?;
    hist.saturating_record(at.elapsed().as_micros() as u64);
    done.fetch_add(n, Ordering::Relaxed);
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

/// CPU time used by this process so far (all threads, user + system), from /proc/self/stat;
/// `None` where that file does not exist.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in clock
    // ticks of 1/100 s on Linux.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// An order as the pipeline benchmark's JSON values carry it (about 100 bytes encoded).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct BenchOrder {
    id: u64,
    amount: i64,
    note: String,
}

pub fn pipeline(data_dir: &Path, a: BenchPipelineArgs) -> Result<()> {
    use weir_engine::{Guarantee, RunOptions};
    let guarantees: Vec<Guarantee> = match a.guarantee.as_str() {
        "exactly_once" => vec![Guarantee::ExactlyOnce],
        "at_least_once" => vec![Guarantee::AtLeastOnce],
        "both" => vec![Guarantee::ExactlyOnce, Guarantee::AtLeastOnce],
        other => bail!("--guarantee `{other}`: expected exactly_once, at_least_once or both"),
    };
    if a.records == 0 || a.partitions == 0 {
        bail!("--records and --partitions must be at least 1");
    }
    if let Some(rate) = a.rate {
        return pipeline_latency(data_dir, &a, &guarantees, rate);
    }
    let scratch = Scratch::new(data_dir, "pipeline")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    log.create_topic(
        "in",
        a.partitions,
        weir_log::TopicConfig::parse_pairs(&["flush=os"])?,
    )?;
    eprintln!("  writing {} input records ...", a.records);
    let now = Timestamp(start_ms());
    let note = "x".repeat(60);
    let mut pending = VecDeque::new();
    let mut builders: Vec<BatchBuilder> = (0..a.partitions)
        .map(|_| BatchBuilder::with_capacity(300 * 1024))
        .collect();
    for i in 0..a.records {
        let key = format!("customer-{}", i % if a.keys > 0 { a.keys } else { 1000 });
        let value = serde_json::to_vec(&BenchOrder {
            id: i,
            amount: (i % 10) as i64 - 1,
            note: note.clone(),
        })?;
        let p = weir_log::partitioner::partition_for_key(key.as_bytes(), a.partitions).0 as usize;
        builders[p].push_parts(Some(key.as_bytes()), Some(&value), &[], now);
        if builders[p].size() >= 256 * 1024 {
            let full = std::mem::replace(&mut builders[p], BatchBuilder::with_capacity(300 * 1024));
            pending.push_back(log.submit_batch("in", PartitionId(p as u32), full.finish())?);
            while pending.len() > 8 {
                if let Some(t) = pending.pop_front() {
                    t.wait()?;
                }
            }
        }
    }
    for (p, b) in builders.into_iter().enumerate() {
        if b.count() > 0 {
            pending.push_back(log.submit_batch("in", PartitionId(p as u32), b.finish())?);
        }
    }
    for t in pending {
        t.wait()?;
    }
    let (groups, txns) = weir_coord::start(&log)?;
    let mut rates = Vec::new();
    for (round, guarantee) in guarantees.iter().enumerate() {
        let app = format!("bench-{round}");
        let out = format!("out-{round}");
        log.create_topic(
            &out,
            a.partitions,
            weir_log::TopicConfig::parse_pairs(&["flush=os"])?,
        )?;
        let mut opts = RunOptions::new(scratch.0.join("state"));
        opts.guarantee = *guarantee;
        opts.commit_interval = Duration::from_millis(a.commit_ms.max(1));
        let start = Instant::now();
        let cpu_start = process_cpu_seconds();
        let running = bench_topology(&app, "in", a.keys, &out)?.run(&log, &groups, &txns, opts)?;
        while running.metrics.records_in.load(Ordering::Relaxed) < a.records {
            std::thread::sleep(Duration::from_millis(5));
            if start.elapsed() > Duration::from_secs(3600) {
                bail!("the pipeline did not finish within an hour");
            }
        }
        running.stop()?;
        let secs = start.elapsed().as_secs_f64();
        let cpu = process_cpu_seconds()
            .zip(cpu_start)
            .map(|(end, start)| end - start);
        let rate = a.records as f64 / secs;
        rates.push(rate);
        println!(
            "bench pipeline: {} — {} records ({} B JSON values), {} partition(s)/task(s), {:?}, commit every {} ms: {:.0} records/s ({:.2} s, processed and committed)",
            if a.keys > 0 { format!("keyed count over {} keys (RocksDB state + changelog)", a.keys) } else { "stateless filter + map".to_string() },
            a.records,
            serde_json::to_vec(&BenchOrder { id: 1, amount: 1, note: note.clone() })?.len(),
            a.partitions,
            guarantee,
            a.commit_ms,
            rate,
            secs
        );
        if let Some(cpu) = cpu {
            println!(
                "  CPU: {cpu:.2} core-seconds for all threads (task, log writers, RocksDB) = {:.0} records per core-second",
                a.records as f64 / cpu.max(1e-3)
            );
        }
    }
    if rates.len() == 2 {
        println!(
            "  exactly-once / at-least-once throughput: {:.2}",
            rates[0] / rates[1]
        );
    }
    drop((groups, txns));
    drop(log);
    drop(scratch);
    Ok(())
}

/// The benchmark pipeline: a keyed count over `keys` keys, or (0) a stateless filter + map.
fn bench_topology(app: &str, input: &str, keys: u64, out: &str) -> Result<weir_engine::Topology> {
    use weir_engine::{Json, Pipeline, Utf8};
    let p = Pipeline::builder(app);
    let orders = p.stream::<String, BenchOrder>(input, Utf8, Json);
    if keys > 0 {
        orders.group_by_key().count().to_topic(out, Utf8, Json);
    } else {
        orders
            .filter(|_, o| o.amount > 0)
            .map_values(|o| o.amount)
            .to_topic(out, Utf8, Json);
    }
    Ok(p.build()?)
}

/// `bench pipeline --rate R`: records produced at a steady rate while the pipeline runs;
/// end-to-end latency is the commit time minus each input record's timestamp.
fn pipeline_latency(
    data_dir: &Path,
    a: &BenchPipelineArgs,
    guarantees: &[weir_engine::Guarantee],
    rate: u64,
) -> Result<()> {
    use weir_engine::RunOptions;
    if rate == 0 {
        bail!("--rate must be at least 1");
    }
    let scratch = Scratch::new(data_dir, "latency")?;
    let log = Log::open_with(scratch.0.join("log"), LogOptions::without_cleaner())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let note = "x".repeat(60);
    for (round, guarantee) in guarantees.iter().enumerate() {
        let (input, out) = (format!("in-{round}"), format!("out-{round}"));
        for t in [&input, &out] {
            log.create_topic(
                t,
                a.partitions,
                weir_log::TopicConfig::parse_pairs(&["flush=os"])?,
            )?;
        }
        let topology = bench_topology(&format!("latency-{round}"), &input, a.keys, &out)?;
        let mut opts = RunOptions::new(scratch.0.join("state"));
        opts.guarantee = *guarantee;
        opts.commit_interval = Duration::from_millis(a.commit_ms.max(1));
        let running = topology.run(&log, &groups, &txns, opts)?;
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < a.records {
            let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(a.records);
            let mut builders: Vec<BatchBuilder> = (0..a.partitions)
                .map(|_| BatchBuilder::with_capacity(64 * 1024))
                .collect();
            let now = Timestamp(start_ms());
            while sent < due {
                let key = format!("customer-{}", sent % if a.keys > 0 { a.keys } else { 1000 });
                let value = serde_json::to_vec(&BenchOrder {
                    id: sent,
                    amount: (sent % 10) as i64 - 1,
                    note: note.clone(),
                })?;
                let p = weir_log::partitioner::partition_for_key(key.as_bytes(), a.partitions).0;
                let b = &mut builders[p as usize];
                b.push_parts(Some(key.as_bytes()), Some(&value), &[], now);
                if b.size() >= 900 * 1024 {
                    let full = std::mem::replace(b, BatchBuilder::with_capacity(64 * 1024));
                    log.submit_batch(&input, PartitionId(p), full.finish())?;
                }
                sent += 1;
            }
            for (p, b) in builders.into_iter().enumerate() {
                if b.count() > 0 {
                    log.submit_batch(&input, PartitionId(p as u32), b.finish())?;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        while running.metrics.records_in.load(Ordering::Relaxed) < a.records {
            std::thread::sleep(Duration::from_millis(5));
            if start.elapsed() > Duration::from_secs(3600) {
                bail!("the pipeline did not keep up within an hour");
            }
        }
        // Let the last interval commit on its own schedule before stopping.
        std::thread::sleep(Duration::from_millis(a.commit_ms.max(1) * 2));
        let m = running.metrics();
        running.stop()?;
        println!(
            "bench pipeline latency: {} — {} records at {rate} records/s, {} partition(s), {:?}, commit every {} ms: end-to-end p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms; commit p50 {:.1} ms, p99 {:.1} ms",
            if a.keys > 0 { format!("keyed count over {} keys", a.keys) } else { "stateless filter + map".to_string() },
            a.records,
            a.partitions,
            guarantee,
            a.commit_ms,
            m.end_to_end_ms.p50,
            m.end_to_end_ms.p99,
            m.end_to_end_ms.p999,
            m.end_to_end_ms.max,
            m.commit_us.p50 as f64 / 1000.0,
            m.commit_us.p99 as f64 / 1000.0,
        );
    }
    drop((groups, txns));
    drop(log);
    drop(scratch);
    Ok(())
}

/// Bytes under `dir`, recursively.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `weir pipeline run latest` over the bench's scratch directory, as a child process.
fn latest_child(scratch: &Path) -> Result<std::process::Child> {
    Ok(std::process::Command::new(std::env::current_exe()?)
        .arg("--data-dir")
        .arg(scratch.join("log"))
        .args([
            "pipeline", "run", "latest", "--app", "restart", "--input", "in", "--output", "out",
        ])
        .arg("--state-dir")
        .arg(scratch.join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?)
}

/// The child's last metrics snapshot, if it wrote one.
fn child_metrics(scratch: &Path) -> Option<weir_engine::MetricsSnapshot> {
    let b = std::fs::read(scratch.join("log/pipelines/restart.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

/// `bench restart --crash`: a child builds the state and is SIGKILLed right after processing
/// the last record; a new child is timed from its start to the output of a record appended
/// in between.
fn restart_after_kill(scratch: &Path, keys: u64) -> Result<()> {
    let log_dir = scratch.join("log");
    let start = Instant::now();
    let mut child = latest_child(scratch)?;
    loop {
        std::thread::sleep(Duration::from_millis(5));
        if child_metrics(scratch).is_some_and(|m| m.records_in >= keys) {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("the pipeline exited with {status} while building the state");
        }
        if start.elapsed() > Duration::from_secs(3600) {
            bail!("building the state did not finish within an hour");
        }
    }
    child.kill()?; // SIGKILL: unflushed memtables are lost
    child.wait()?;
    eprintln!(
        "  built the state in a child process and killed it with SIGKILL after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let state_bytes = dir_bytes(&scratch.join("state"));
    let out_end = {
        let log = Log::open_with(&log_dir, LogOptions::without_cleaner())?;
        log.append(
            "in",
            PartitionId(0),
            &[weir_log::Record::keyed("k0", "after the crash")],
        )?;
        log.latest_offset("out", PartitionId(0))?
    };
    let _ = std::fs::remove_file(log_dir.join("pipelines/restart.json"));
    let view = Log::open_read_only(&log_dir, LogOptions::default())?;
    let t0 = Instant::now();
    let mut child = latest_child(scratch)?;
    let first = 'wait: loop {
        view.refresh("out")?;
        let f = view.read_isolated(
            "out",
            PartitionId(0),
            out_end,
            1 << 20,
            weir_log::Isolation::ReadCommitted,
        )?;
        for r in f.records() {
            if r?.key == Some(b"k0".as_slice()) {
                break 'wait t0.elapsed();
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("the restarted pipeline exited with {status}");
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("no output within 10 minutes of the restart");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // Its metrics (written every second) tell how much of the changelog it restored: the
    // first snapshot written after the output appeared.
    let seen_ms = start_ms();
    let deadline = Instant::now() + Duration::from_secs(5);
    let restored = loop {
        if let Some(m) = child_metrics(scratch).filter(|m| m.at_ms >= seen_ms) {
            break Some(m.tasks.iter().map(|t| t.restored_records).sum::<u64>());
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill()?;
    child.wait()?;
    println!(
        "bench restart --crash: {:.0} MiB of committed state ({keys} keys), writer SIGKILLed — first output {:.0} ms after the new process started (process start, log recovery, RocksDB open, changelog tail restore, commit); changelog records restored: {}",
        state_bytes as f64 / (1024.0 * 1024.0),
        first.as_secs_f64() * 1000.0,
        restored.map_or("unknown".to_string(), |n| n.to_string()),
    );
    Ok(())
}

/// The pipeline of `bench restart`: the latest value per key (state), its length out.
fn latest_value_pipeline() -> Result<weir_engine::Topology> {
    super::pipeline::builtin("latest", "restart", "in", "out")
}

pub fn restart(data_dir: &Path, a: BenchRestartArgs) -> Result<()> {
    use weir_engine::RunOptions;
    if a.value_bytes == 0 || a.state_mb == 0 {
        bail!("--state-mb and --value-bytes must be at least 1");
    }
    let scratch = Scratch::new(data_dir, "restart")?;
    let log_dir = scratch.0.join("log");
    let state_dir = scratch.0.join("state");
    let keys = a.state_mb * 1024 * 1024 / a.value_bytes as u64;
    let flush_os = || weir_log::TopicConfig::parse_pairs(&["flush=os"]);
    {
        let log = Log::open_with(&log_dir, LogOptions::without_cleaner())?;
        log.create_topic("in", 1, flush_os()?)?;
        log.create_topic("out", 1, flush_os()?)?;
        eprintln!(
            "  writing {keys} records of {} B under distinct keys ...",
            a.value_bytes
        );
        let mut rng = weir_log::sim::SeededRng::new(7);
        let mut b = BatchBuilder::with_capacity(1100 * 1024);
        let now = Timestamp(start_ms());
        let mut pending = VecDeque::new();
        for k in 0..keys {
            // Incompressible-ish values, so the state on disk is as large as it says.
            let value: String = (0..a.value_bytes)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect();
            b.push_parts(
                Some(format!("k{k}").as_bytes()),
                Some(value.as_bytes()),
                &[],
                now,
            );
            if b.size() >= 900 * 1024 {
                let full = std::mem::replace(&mut b, BatchBuilder::with_capacity(1100 * 1024));
                pending.push_back(log.submit_batch("in", PartitionId(0), full.finish())?);
                while pending.len() > 8 {
                    if let Some(t) = pending.pop_front() {
                        t.wait()?;
                    }
                }
            }
        }
        if b.count() > 0 {
            pending.push_back(log.submit_batch("in", PartitionId(0), b.finish())?);
        }
        for t in pending {
            t.wait()?;
        }
    }
    if a.crash {
        return restart_after_kill(&scratch.0, keys);
    }
    {
        let log = Log::open_with(&log_dir, LogOptions::without_cleaner())?;
        let (groups, txns) = weir_coord::start(&log)?;
        let start = Instant::now();
        let running =
            latest_value_pipeline()?.run(&log, &groups, &txns, RunOptions::new(&state_dir))?;
        while running.metrics.records_in.load(Ordering::Relaxed) < keys {
            std::thread::sleep(Duration::from_millis(20));
            if start.elapsed() > Duration::from_secs(3600) {
                bail!("building the state did not finish within an hour");
            }
        }
        running.stop()?;
        eprintln!(
            "  built the state: {keys} keys in {:.1} s ({:.0} records/s)",
            start.elapsed().as_secs_f64(),
            keys as f64 / start.elapsed().as_secs_f64()
        );
    }
    let state_bytes = dir_bytes(&state_dir);
    let mut firsts = Vec::new();
    for round in 0..a.rounds.max(1) {
        // A new record for an existing key, written while the pipeline is down.
        let out_end = {
            let log = Log::open_with(&log_dir, LogOptions::without_cleaner())?;
            log.append(
                "in",
                PartitionId(0),
                &[weir_log::Record::keyed(format!("k{round}"), "restarted")],
            )?;
            log.latest_offset("out", PartitionId(0))?
        };
        let t0 = Instant::now();
        let log = Log::open_with(&log_dir, LogOptions::without_cleaner())?;
        let opened = t0.elapsed();
        let (groups, txns) = weir_coord::start(&log)?;
        let coordinators = t0.elapsed();
        let running =
            latest_value_pipeline()?.run(&log, &groups, &txns, RunOptions::new(&state_dir))?;
        let first = loop {
            let f = log.read_isolated(
                "out",
                PartitionId(0),
                out_end,
                1 << 16,
                weir_log::Isolation::ReadCommitted,
            )?;
            if f.records().next().is_some() {
                break t0.elapsed();
            }
            if t0.elapsed() > Duration::from_secs(600) {
                bail!("no output within 10 minutes of the restart");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let restored: u64 = running
            .metrics()
            .tasks
            .iter()
            .map(|t| t.restored_records)
            .sum();
        running.stop()?;
        println!(
            "bench restart: round {round}: {:.0} MiB of committed state ({keys} keys) — first output {:.0} ms after the restart began (log open {:.0} ms, coordinators {:.0} ms); changelog records restored: {restored}",
            state_bytes as f64 / (1024.0 * 1024.0),
            first.as_secs_f64() * 1000.0,
            opened.as_secs_f64() * 1000.0,
            (coordinators - opened).as_secs_f64() * 1000.0,
        );
        firsts.push(first);
        drop((groups, txns));
        drop(log);
    }
    firsts.sort();
    println!(
        "  restart to first output: median {:.0} ms, max {:.0} ms over {} round(s)",
        firsts[firsts.len() / 2].as_secs_f64() * 1000.0,
        firsts[firsts.len() - 1].as_secs_f64() * 1000.0,
        firsts.len()
    );
    drop(scratch);
    Ok(())
}
