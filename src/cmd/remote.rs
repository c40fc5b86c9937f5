//! Commands beside a running `weir serve`: the server holds the data directory, so commands
//! that write (`produce`, `topic create|delete`, `group reset-offsets|delete`) go through its
//! Kafka listener, found in `DATA_DIR/serve.json`. Reads (`consume`, `topic list|describe`,
//! `group list|describe`) keep using read-only views of the directory.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use weir_kafka::Client;
use weir_log::{BatchBuilder, Clock, ProducerFields, SystemClock};

use super::produce::{check_partition, next_lines, partition_lines, read_lines, Stats};
use super::serve::{ServeInfo, SERVE_FILE};
use crate::cli::ProduceArgs;

/// The Kafka address of a `weir serve` that is running on `dir`, if one is.
pub fn server_address(dir: &Path) -> Result<Option<String>> {
    let path = dir.join(SERVE_FILE);
    let Ok(raw) = std::fs::read(&path) else {
        return Ok(None);
    };
    let info: ServeInfo = serde_json::from_slice(&raw)
        .with_context(|| format!("{} is not what `weir serve` writes", path.display()))?;
    // A server killed with -9 leaves its file behind: only a live process counts.
    if !Path::new("/proc").join(info.pid.to_string()).exists() {
        return Ok(None);
    }
    match info.kafka_advertised.or(info.kafka) {
        Some(addr) => Ok(Some(addr)),
        None => bail!(
            "`weir serve` (pid {}) holds {} with its Kafka listener off; stop it or start it with --kafka-listen",
            info.pid,
            dir.display()
        ),
    }
}

/// A client of the server running on `dir`, if one is.
pub fn client(dir: &Path) -> Result<Option<Client>> {
    match server_address(dir)? {
        Some(addr) => Ok(Some(Client::connect(&addr)?)),
        None => Ok(None),
    }
}

/// `weir produce` through the server: the same batching, an idempotent producer id from the
/// server, one Produce request (`acks=all`) per batch of lines.
pub fn produce(addr: &str, args: ProduceArgs) -> Result<()> {
    let mut client = Client::connect(addr)?;
    let partitions = client.partitions(&args.topic)?;
    check_partition(&args, partitions)?;
    let (pid, epoch) = client.init_producer_id()?;
    let mut sequences = vec![0i32; partitions as usize];
    let rx = read_lines();
    let start = Instant::now();
    let mut stats = Stats {
        records: 0,
        bytes: 0,
    };
    let mut round = 0u32;
    let clock = SystemClock;
    while let Some((lines, _)) = next_lines(&rx, args.batch_records) {
        let by_partition = partition_lines(lines, &args, partitions, &mut round, &mut stats);
        let mut batches = Vec::new();
        let mut firsts = Vec::new();
        for (p, recs) in by_partition.into_iter().enumerate() {
            if recs.is_empty() {
                continue;
            }
            let first = sequences[p];
            let mut b = BatchBuilder::with_capacity(recs.len() * 64).producer(ProducerFields {
                producer_id: pid,
                producer_epoch: epoch,
                base_sequence: first,
            });
            for r in &recs {
                b.push(r, clock.now());
            }
            sequences[p] = first.wrapping_add(recs.len() as i32) & i32::MAX;
            firsts.push((first, recs.len()));
            batches.push((p as u32, Bytes::from(b.finish().as_bytes().to_vec())));
        }
        let acks = client
            .produce(&args.topic, batches)
            .context("records after the last printed ack were not acknowledged")?;
        if args.print_acks {
            for ((p, base), (first, n)) in acks.into_iter().zip(firsts) {
                let last_seq = first.wrapping_add(n as i32 - 1) & i32::MAX;
                println!(
                    "ack p={p} offsets={base}-{} producer={pid} epoch={epoch} seq={first}-{last_seq}",
                    base + n as i64 - 1
                );
            }
        }
    }
    stats.report(&args.topic, start);
    Ok(())
}
