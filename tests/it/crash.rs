//! Reliability row 1: SIGKILL a real `weir produce` under load, reopen, and check that every
//! record the producer reported as acknowledged is there, in order, exactly once (C1, C2), and
//! that each partition holds a prefix of what was sent to it (no duplicates, no reordering,
//! nothing invented). Cycles: `WEIR_CRASH_CYCLES` (default 20).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_log::{Log, LogOptions, Offset, PartitionId};

use crate::util::{run, weir, Rng};

const PARTITIONS: u32 = 3;
/// Most lines fed to one producer before its kill (bounds the test's memory).
const LINES_MAX: u64 = 2_000_000;

#[test]
fn kill_9_under_load_loses_no_acknowledged_record() -> anyhow::Result<()> {
    let cycles: u64 = std::env::var("WEIR_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let mut rng = Rng::from_env("kill_9_under_load");
    let d = tempfile::tempdir()?;
    let o = run(
        d.path(),
        &[
            "topic",
            "create",
            "load",
            "--partitions",
            &PARTITIONS.to_string(),
            "--config",
            "segment.bytes=65536",
        ],
        "",
    );
    anyhow::ensure!(o.status.success(), "create failed");
    // What each partition must contain, in order: every line ever sent to it.
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); PARTITIONS as usize];
    let mut acked_through: Vec<i64> = vec![-1; PARTITIONS as usize];
    let mut kills_in_flight = 0u64;
    for cycle in 0..cycles {
        // Anything past the acknowledged prefix may or may not have survived the last kill;
        // re-read to learn what did, so this cycle's lines follow it.
        let log = open(d.path())?;
        for p in 0..PARTITIONS as usize {
            let have = read_partition(&log, p as u32)?;
            check_prefix(&have, &sent[p], acked_through[p], cycle, p)?;
            sent[p].truncate(have.len());
        }
        drop(log);

        let mut child = weir(d.path())
            .args([
                "produce",
                "load",
                "--key-separator",
                ":",
                "--print-acks",
                "--batch-records",
                "200",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("stdout"))?;
        let acks = Arc::new(Mutex::new(acked_through.clone()));
        // Records acknowledged in this cycle, for timing the kill against acks.
        let acked_records = Arc::new(AtomicU64::new(0));
        let (acks_reader, acked_counter) = (acks.clone(), acked_records.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // ack p=P offsets=A-B
                let mut p = None;
                let mut range = None;
                for f in line.split_whitespace() {
                    if let Some(v) = f.strip_prefix("p=") {
                        p = v.parse::<usize>().ok();
                    } else if let Some(v) = f.strip_prefix("offsets=") {
                        let mut ends = v.split('-').map(|x| x.parse::<i64>().ok());
                        range = ends.next().flatten().zip(ends.next().flatten());
                    }
                }
                if let (Some(p), Some((first, last))) = (p, range) {
                    let mut a = acks_reader.lock().unwrap_or_else(|e| e.into_inner());
                    a[p] = a[p].max(last);
                    acked_counter.fetch_add((last - first + 1) as u64, Ordering::SeqCst);
                }
            }
        });
        // The producer is fed without pause until the kill, so appends are in flight when it
        // lands; lines written into the pipe but never read by the dead producer are simply
        // never appended, which `check_prefix` allows.
        let written = Arc::new(AtomicU64::new(0));
        let written_counter = written.clone();
        let writer = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for i in 0..LINES_MAX {
                let key = format!("key-{}", i % 17);
                let p =
                    weir_log::partitioner::partition_for_key(key.as_bytes(), PARTITIONS).0 as usize;
                let line = format!("{key}:c{cycle}-n{i}");
                if writeln!(stdin, "{line}").is_err() {
                    break; // killed
                }
                lines.push((p, line));
                written_counter.fetch_add(1, Ordering::SeqCst);
            }
            lines
        });
        // Kill right after the k-th acknowledged record, k random: the kill is timed against
        // acks, not against the clock (a producer that had finished would test nothing).
        let target = 1 + rng.below(5_000);
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked_records.load(Ordering::SeqCst) < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        child.kill()?; // SIGKILL
        let (at_kill_written, at_kill_acked) = (
            written.load(Ordering::SeqCst),
            acked_records.load(Ordering::SeqCst),
        );
        child.wait()?;
        if at_kill_written > at_kill_acked {
            kills_in_flight += 1;
        }
        let lines = writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))?;
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?;
        for (p, l) in lines {
            sent[p].push(
                l.split_once(':')
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default(),
            );
        }
        acked_through = acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    }
    let log = open(d.path())?;
    let mut total_acked = 0;
    for p in 0..PARTITIONS as usize {
        let have = read_partition(&log, p as u32)?;
        check_prefix(&have, &sent[p], acked_through[p], cycles, p)?;
        total_acked += acked_through[p] + 1;
    }
    eprintln!(
        "{cycles} kill -9 cycles ({kills_in_flight} with appends in flight at the kill), {total_acked} acknowledged records all present"
    );
    anyhow::ensure!(
        kills_in_flight * 2 >= cycles,
        "only {kills_in_flight} of {cycles} kills landed while appends were in flight"
    );
    anyhow::ensure!(
        total_acked > 0,
        "the producer never got an ack: the test did not test anything"
    );
    Ok(())
}

fn open(dir: &std::path::Path) -> anyhow::Result<Log> {
    Ok(Log::open_with(dir, LogOptions::without_cleaner())?)
}

fn read_partition(log: &Log, p: u32) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut at = Offset(0);
    loop {
        let f = log.read("load", PartitionId(p), at, 1 << 20)?;
        if f.is_empty() {
            return Ok(out);
        }
        for r in f.records() {
            let r = r?;
            anyhow::ensure!(
                r.offset.0 == out.len() as i64,
                "offset {} where {} was expected",
                r.offset,
                out.len()
            );
            out.push(String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned());
        }
        at = f.next_offset();
    }
}

/// `have` must be a prefix of `sent` at least `acked_through + 1` long.
fn check_prefix(
    have: &[String],
    sent: &[String],
    acked_through: i64,
    cycle: u64,
    p: usize,
) -> anyhow::Result<()> {
    let acked = (acked_through + 1) as usize;
    anyhow::ensure!(
        have.len() >= acked,
        "cycle {cycle}, partition {p}: {} records survived but {acked} were acknowledged",
        have.len()
    );
    let mut seen = HashMap::new();
    for (i, v) in have.iter().enumerate() {
        anyhow::ensure!(
            seen.insert(v.clone(), i).is_none(),
            "cycle {cycle}, partition {p}: duplicate {v} at offset {i}"
        );
        anyhow::ensure!(
            sent.get(i) == Some(v),
            "cycle {cycle}, partition {p}: offset {i} holds {v}, expected {:?}",
            sent.get(i)
        );
    }
    Ok(())
}

/// An idempotent retry after `kill -9`: the newest batches the dead producer wrote (acked or
/// still in flight when it died: what a real producer would retry) are sent again with the
/// same producer id, epoch and sequences, and the log answers with their original offsets
/// instead of appending them twice. Every acknowledged batch is there.
#[test]
fn retries_after_kill_9_are_deduplicated() -> anyhow::Result<()> {
    let mut rng = Rng::from_env("retries_after_kill_9");
    let d = tempfile::tempdir()?;
    let o = run(d.path(), &["topic", "create", "once"], "");
    anyhow::ensure!(o.status.success(), "create failed");
    for cycle in 0..3u64 {
        let mut child = weir(d.path())
            .args([
                "produce",
                "once",
                "--partition",
                "0",
                "--print-acks",
                "--batch-records",
                "100",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("stdout"))?;
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| parse_ack(&l))
                .collect::<Vec<_>>()
        });
        let writer = std::thread::spawn(move || {
            for i in 0..50_000 {
                if writeln!(stdin, "c{cycle}-n{i}").is_err() {
                    break;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(100 + rng.below(200)));
        child.kill()?;
        child.wait()?;
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))?;
        let acks = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?;
        anyhow::ensure!(!acks.is_empty(), "cycle {cycle}: no ack before the kill");
        let log = open(d.path())?;
        let before = read_partition_of(&log, "once")?;
        for a in &acks {
            anyhow::ensure!(
                before.len() as i64 > a.last,
                "cycle {cycle}: acknowledged offsets {}-{} lost",
                a.base,
                a.last
            );
        }
        let pid = acks[0].producer;
        let newest = newest_batches_of(&log, "once", pid, 5)?;
        anyhow::ensure!(
            !newest.is_empty(),
            "cycle {cycle}: no batch of producer {pid} found"
        );
        for (header, values) in newest {
            let mut b = weir_log::BatchBuilder::with_capacity(64 * 1024).producer(
                weir_log::ProducerFields {
                    producer_id: header.producer_id,
                    producer_epoch: header.producer_epoch,
                    base_sequence: header.base_sequence,
                },
            );
            for v in &values {
                b.push_parts(None, Some(v.as_bytes()), &[], weir_log::Timestamp(0));
            }
            let ack = log
                .submit_batch("once", PartitionId(0), b.finish())?
                .wait()?;
            anyhow::ensure!(
                ack.base_offset == header.base_offset && ack.last_offset == header.last_offset(),
                "cycle {cycle}: retry of seq {} got offsets {}-{}, originally {}-{}",
                header.base_sequence,
                ack.base_offset,
                ack.last_offset,
                header.base_offset,
                header.last_offset()
            );
        }
        let after = read_partition_of(&log, "once")?;
        anyhow::ensure!(after == before, "cycle {cycle}: a retry changed the log");
        let mut seen = std::collections::HashSet::new();
        for v in &after {
            anyhow::ensure!(seen.insert(v.clone()), "cycle {cycle}: {v} twice");
        }
    }
    Ok(())
}

/// The newest `n` batches of producer `pid` in partition 0, with their values.
fn newest_batches_of(
    log: &Log,
    topic: &str,
    pid: i64,
    n: usize,
) -> anyhow::Result<Vec<(weir_log::BatchHeader, Vec<String>)>> {
    let mut all = Vec::new();
    let mut at = Offset(0);
    loop {
        let f = log.read(topic, PartitionId(0), at, 1 << 20)?;
        if f.is_empty() {
            break;
        }
        for b in weir_log::BatchIter::new(&f.batches) {
            let b = b?;
            if b.header.producer_id == pid {
                let values = b
                    .records()
                    .map(|r| {
                        r.map(|r| String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned())
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                all.push((b.header, values));
            }
        }
        at = f.next_offset();
    }
    let skip = all.len().saturating_sub(n);
    Ok(all.into_iter().skip(skip).collect())
}

struct AckLine {
    base: i64,
    last: i64,
    producer: i64,
}

/// `ack p=0 offsets=A-B producer=ID epoch=E seq=X-Y`
fn parse_ack(line: &str) -> Option<AckLine> {
    let field = |name: &str| line.split_whitespace().find_map(|f| f.strip_prefix(name));
    let range = |s: &str| -> Option<(i64, i64)> {
        let (a, b) = s.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    let (base, last) = range(field("offsets=")?)?;
    range(field("seq=")?)?;
    field("epoch=")?;
    Some(AckLine {
        base,
        last,
        producer: field("producer=")?.parse().ok()?,
    })
}

fn read_partition_of(log: &Log, topic: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut at = Offset(0);
    loop {
        let f = log.read(topic, PartitionId(0), at, 1 << 20)?;
        if f.is_empty() {
            return Ok(out);
        }
        for r in f.records() {
            out.push(String::from_utf8_lossy(r?.value.unwrap_or_default()).into_owned());
        }
        at = f.next_offset();
    }
}
