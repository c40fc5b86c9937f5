//! `weir produce`: one record per stdin line, batched and pipelined.
//!
//! A reader thread feeds lines through a bounded channel; the main thread takes whatever is
//! available (up to `--batch-records`), groups it by partition, and submits one append per
//! partition, keeping a few appends in flight. When input pauses, it waits for every
//! outstanding ack first, so interactive use sees each line acknowledged at once.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use weir_log::{PartitionId, Producer, Record, Submitted};

use crate::cli::ProduceArgs;

/// Lines buffered between the stdin reader and the producer: bounds memory when the log is
/// slower than the input.
const LINE_CHANNEL_MAX: usize = 64 * 1024;
/// Appends in flight before the producer waits for the oldest ack. At most 5, like Kafka's
/// idempotent producer: a partition remembers a producer's last 5 batches, so any batch still
/// in flight can be retried without a duplicate.
const IN_FLIGHT_MAX: usize = weir_log::producer_state::BATCHES_PER_PRODUCER;

pub(super) struct Stats {
    pub(super) records: u64,
    pub(super) bytes: u64,
}

impl Stats {
    pub(super) fn report(&self, topic: &str, start: Instant) {
        let secs = start.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "produced {} records ({:.1} MB) to `{topic}` in {secs:.2} s: {:.0} records/s, {:.1} MB/s",
            self.records,
            self.bytes as f64 / 1e6,
            self.records as f64 / secs,
            self.bytes as f64 / 1e6 / secs
        );
    }
}

pub fn run(dir: &Path, args: ProduceArgs) -> Result<()> {
    if let Some(addr) = super::remote::server_address(dir)? {
        return super::remote::produce(&addr, args);
    }
    // A long-running producer also runs retention and compaction in the background.
    let log = super::open_log(dir, true)?;
    let partitions = log.partition_count(&args.topic)?;
    check_partition(&args, partitions)?;
    let rx = read_lines();
    let start = Instant::now();
    let mut stats = Stats {
        records: 0,
        bytes: 0,
    };
    // Idempotent: the partition drops a retried batch instead of appending it twice.
    let mut producer = Producer::new(&log)?;
    let mut in_flight: VecDeque<Submitted> = VecDeque::new();
    let mut round = 0u32;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while let Some((lines, input_paused)) = next_lines(&rx, args.batch_records) {
        let by_partition = partition_lines(lines, &args, partitions, &mut round, &mut stats);
        for (p, recs) in by_partition.into_iter().enumerate() {
            if recs.is_empty() {
                continue;
            }
            in_flight.extend(producer.submit(&args.topic, PartitionId(p as u32), &recs)?);
            while in_flight.len() >= IN_FLIGHT_MAX {
                ack(&mut in_flight, &mut out, args.print_acks, &producer)?;
            }
        }
        if input_paused {
            while !in_flight.is_empty() {
                ack(&mut in_flight, &mut out, args.print_acks, &producer)?;
            }
        }
    }
    while !in_flight.is_empty() {
        ack(&mut in_flight, &mut out, args.print_acks, &producer)?;
    }
    stats.report(&args.topic, start);
    Ok(())
}

pub(super) fn check_partition(args: &ProduceArgs, partitions: u32) -> Result<()> {
    if let Some(p) = args.partition {
        if p >= partitions {
            bail!(
                "topic `{}` has {partitions} partitions; partition {p} does not exist",
                args.topic
            );
        }
    }
    Ok(())
}

/// Stdin's lines, through a bounded channel fed by a reader thread.
pub(super) fn read_lines() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(LINE_CHANNEL_MAX);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    while matches!(line.last(), Some(b'\n' | b'\r')) {
                        line.pop();
                    }
                    if tx.send(line.clone()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// The next lines: at least one (waiting for it), then whatever is there up to `max`; and
/// whether input paused (fewer than `max` were waiting). `None` at the end of input.
pub(super) fn next_lines(rx: &mpsc::Receiver<Vec<u8>>, max: usize) -> Option<(Vec<Vec<u8>>, bool)> {
    let first = rx.recv().ok()?;
    let mut lines = vec![first];
    while lines.len() < max {
        match rx.try_recv() {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    let paused = lines.len() < max;
    Some((lines, paused))
}

/// Lines as records, by partition: `--partition`, else the key's partition (Kafka's murmur2),
/// else one partition per round (sticky, as Kafka's keyless default).
pub(super) fn partition_lines(
    lines: Vec<Vec<u8>>,
    args: &ProduceArgs,
    partitions: u32,
    round: &mut u32,
    stats: &mut Stats,
) -> Vec<Vec<Record>> {
    let sep = args.key_separator.as_deref().map(str::as_bytes);
    let mut by_partition: Vec<Vec<Record>> = vec![Vec::new(); partitions as usize];
    let sticky = *round % partitions;
    *round = round.wrapping_add(1);
    for line in lines {
        stats.bytes += line.len() as u64;
        stats.records += 1;
        let (key, value) = split_line(line, sep);
        let p = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => weir_log::partitioner::partition_for_key(k, partitions).0,
            (None, None) => sticky,
        };
        by_partition[p as usize].push(Record {
            key,
            value: Some(value),
            ..Record::default()
        });
    }
    by_partition
}

fn split_line(line: Vec<u8>, sep: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    let Some(sep) = sep.filter(|s| !s.is_empty()) else {
        return (None, Bytes::from(line));
    };
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(i) => {
            let line = Bytes::from(line);
            (Some(line.slice(..i)), line.slice(i + sep.len()..))
        }
        None => (None, Bytes::from(line)),
    }
}

fn ack(
    in_flight: &mut VecDeque<Submitted>,
    out: &mut impl Write,
    print: bool,
    producer: &Producer,
) -> Result<()> {
    let Some(s) = in_flight.pop_front() else {
        return Ok(());
    };
    let a = s
        .ticket
        .wait()
        .context("append failed; records after the last printed ack were not acknowledged")?;
    if print {
        let (pid, epoch) = producer.identity();
        let last_seq = s.first_sequence.wrapping_add(s.records as i32 - 1) & i32::MAX;
        writeln!(
            out,
            "ack p={} offsets={}-{} producer={pid} epoch={epoch} seq={}-{last_seq}",
            a.partition, a.base_offset, a.last_offset, s.first_sequence
        )?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_first_separator_only() {
        let (k, v) = split_line(b"user-1:a:b".to_vec(), Some(b":"));
        assert_eq!(k.as_deref(), Some(&b"user-1"[..]));
        assert_eq!(&v[..], b"a:b");
        let (k, v) = split_line(b"no-sep".to_vec(), Some(b":"));
        assert!(k.is_none());
        assert_eq!(&v[..], b"no-sep");
    }
}
