//! `weir consume`: prints records of one or all partitions in a kcat-style format, stopping at
//! the end (the high watermark seen at start) or following new appends with `--follow`.

use std::io::{BufWriter, ErrorKind, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use weir_log::{Isolation, Log, LogError, Offset, PartitionId};

use crate::cli::ConsumeArgs;
use crate::format::Format;

/// Bytes fetched per read.
const FETCH_BYTES: usize = 1024 * 1024;

pub fn run(dir: &Path, args: ConsumeArgs) -> Result<()> {
    let format = Format::parse(args.format()).map_err(anyhow::Error::msg)?;
    let isolation = super::group::parse_isolation(&args.isolation)?;
    // Read-only: a consumer never blocks a producer process, and follows its appends.
    let log = super::open_log_read_only(dir)?;
    let partitions = log.partition_count(&args.topic)?;
    let parts: Vec<u32> = match args.partition {
        Some(p) if p >= partitions => {
            bail!(
                "topic `{}` has {partitions} partitions; partition {p} does not exist",
                args.topic
            )
        }
        Some(p) => vec![p],
        None => (0..partitions).collect(),
    };
    let mut positions = Vec::with_capacity(parts.len());
    let mut ends = Vec::with_capacity(parts.len());
    for &p in &parts {
        positions.push(start_offset(
            &log,
            &args.topic,
            PartitionId(p),
            &args.offset,
        )?);
        ends.push(match isolation {
            Isolation::ReadCommitted => log.last_stable_offset(&args.topic, PartitionId(p))?,
            Isolation::ReadUncommitted => log.latest_offset(&args.topic, PartitionId(p))?,
        });
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut printed = 0u64;
    let result = (|| -> Result<()> {
        loop {
            let listener = if args.follow {
                Some(log.listen(&args.topic)?)
            } else {
                None
            };
            let mut progressed = false;
            let mut done = true;
            for (i, &p) in parts.iter().enumerate() {
                if !args.follow && positions[i] >= ends[i] {
                    continue;
                }
                done = false;
                let fetch = match log.read_isolated(
                    &args.topic,
                    PartitionId(p),
                    positions[i],
                    FETCH_BYTES,
                    isolation,
                ) {
                    // Retention passed us while following: go on from the new start, loudly.
                    Err(LogError::OffsetOutOfRange {
                        log_start,
                        requested,
                        ..
                    }) if requested < log_start => {
                        eprintln!(
                            "warning: {}/{p}: offsets {requested}..{log_start} were deleted by retention; continuing at {log_start}",
                            args.topic
                        );
                        positions[i] = log_start;
                        continue;
                    }
                    other => other.with_context(|| format!("reading {}/{p}", args.topic))?,
                };
                for r in fetch.records() {
                    let r = r.with_context(|| format!("decoding {}/{p}", args.topic))?;
                    if !args.follow && r.offset >= ends[i] {
                        break;
                    }
                    format.write(&mut out, &args.topic, p, &r)?;
                    printed += 1;
                    if args.max_messages.is_some_and(|m| printed >= m) {
                        return Ok(());
                    }
                }
                let next = fetch.next_offset();
                progressed |= next > positions[i];
                positions[i] = next;
            }
            if done && !args.follow {
                return Ok(());
            }
            if !progressed {
                out.flush()?;
                if let Some(l) = listener {
                    l.wait_timeout(Duration::from_secs(1));
                }
            }
        }
    })();
    match result.and_then(|()| out.flush().map_err(Into::into)) {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    })
}

fn start_offset(log: &Log, topic: &str, p: PartitionId, spec: &str) -> Result<Offset> {
    let earliest = log.earliest_offset(topic, p)?;
    let latest = log.latest_offset(topic, p)?;
    Ok(match spec {
        "earliest" => earliest,
        "latest" => latest,
        s => {
            let n: i64 = s.parse().map_err(|_| {
                anyhow::anyhow!("--offset `{s}`: expected earliest, latest, N or -N")
            })?;
            if n < 0 {
                Offset((latest.0 + n).max(earliest.0))
            } else {
                // Let the log say what is valid if N is outside the partition.
                log.read(topic, p, Offset(n), 1)?;
                Offset(n)
            }
        }
    })
}
