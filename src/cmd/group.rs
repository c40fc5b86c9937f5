//! `weir group …` and `weir consume --group`: consumer groups from the command line.
//!
//! Committing offsets writes `__consumer_offsets`, so `consume --group`, `reset-offsets` and
//! `delete` need the data directory's lock; `list` and `describe` work alongside a writer.

use std::io::{BufWriter, ErrorKind, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use weir_coord::{Consumer, ConsumerConfig, GroupCoordinator, OffsetReset};
use weir_log::{Isolation, PartitionId};

use crate::cli::{ConsumeArgs, GroupCmd};
use crate::format::{Fields, Format};

pub fn run(dir: &Path, cmd: GroupCmd) -> Result<()> {
    match cmd {
        GroupCmd::List | GroupCmd::Describe { .. } => {
            // Works read-only when the offsets topic exists; creates it otherwise.
            let log = match super::open_log_read_only(dir) {
                Ok(l)
                    if l.list_topics()
                        .iter()
                        .any(|t| t == weir_coord::offsets::OFFSETS_TOPIC) =>
                {
                    l
                }
                _ => super::open_log(dir, false)?,
            };
            let coord = GroupCoordinator::start(&log)?;
            match cmd {
                GroupCmd::List => {
                    for (g, state) in coord.list_groups() {
                        println!("{g}\t{state:?}");
                    }
                }
                GroupCmd::Describe { group } => describe(&coord, &group)?,
                _ => {}
            }
        }
        GroupCmd::ResetOffsets { group, topic, to }
            if super::remote::server_address(dir)?.is_some() =>
        {
            // Beside a server: compute the targets from a read-only view, commit through it.
            let log = super::open_log_read_only(dir)?;
            let targets = weir_coord::reset_targets(&log, &topic, &to)?;
            let offsets: Vec<(u32, i64)> = targets.iter().map(|(p, o)| (*p, o.0)).collect();
            if let Some(mut client) = super::remote::client(dir)? {
                client.commit_offsets(&group, &topic, &offsets, &format!("reset to {to}"))?;
            }
            for (p, o) in targets {
                println!("{topic}/{p} -> {o}");
            }
        }
        GroupCmd::ResetOffsets { group, topic, to } => {
            let log = super::open_log(dir, false)?;
            let coord = GroupCoordinator::start(&log)?;
            for (p, o) in coord.reset_offsets(&group, &topic, &to)? {
                println!("{topic}/{p} -> {o}");
            }
        }
        GroupCmd::Delete { group } if super::remote::server_address(dir)?.is_some() => {
            if let Some(mut client) = super::remote::client(dir)? {
                client.delete_group(&group)?;
            }
            println!("deleted group `{group}`");
        }
        GroupCmd::Delete { group } => {
            let log = super::open_log(dir, false)?;
            GroupCoordinator::start(&log)?.delete_group(&group)?;
            println!("deleted group `{group}`");
        }
    }
    Ok(())
}

fn describe(coord: &GroupCoordinator, group: &str) -> Result<()> {
    let d = coord.describe_group(group)?;
    println!(
        "group {}  state {:?}  generation {}  members {}",
        d.group,
        d.state,
        d.generation,
        d.members.len()
    );
    if !d.members.is_empty() {
        println!("{:<40} {:<24} {:<16}", "MEMBER", "CLIENT-ID", "HOST");
        for m in &d.members {
            let host = if m.client_host.is_empty() {
                "-"
            } else {
                &m.client_host
            };
            println!("{:<40} {:<24} {:<16}", m.member_id, m.client_id, host);
        }
    }
    println!(
        "{:<24} {:>9}  {:<24} {:>12} {:>12} {:>10}",
        "TOPIC", "PARTITION", "MEMBER", "COMMITTED", "LOG-END", "LAG"
    );
    // The partitions the members subscribed to count even before their first commit.
    let mut subscribed: Vec<String> = d
        .members
        .iter()
        .filter_map(|m| weir_coord::decode_subscription(&m.metadata).ok())
        .flatten()
        .collect();
    subscribed.sort();
    subscribed.dedup();
    for l in coord.lag(group, &subscribed)? {
        println!(
            "{:<24} {:>9}  {:<24} {:>12} {:>12} {:>10}",
            l.topic,
            l.partition,
            l.owner.as_deref().unwrap_or("-"),
            l.committed.map_or("-".to_string(), |o| o.to_string()),
            l.log_end,
            l.lag
        );
    }
    Ok(())
}

pub(crate) fn parse_isolation(s: &str) -> Result<Isolation> {
    match s {
        "read_uncommitted" => Ok(Isolation::ReadUncommitted),
        "read_committed" => Ok(Isolation::ReadCommitted),
        other => bail!("--isolation `{other}`: expected read_uncommitted or read_committed"),
    }
}

/// `weir consume TOPIC --group G`: one member of the group; prints, then commits what it printed.
pub fn consume(dir: &Path, args: ConsumeArgs) -> Result<()> {
    let group = args.group.clone().unwrap_or_default();
    if args.partition.is_some() {
        bail!("--partition and --group do not go together: the group assigns partitions");
    }
    let format = Format::parse(args.format()).map_err(anyhow::Error::msg)?;
    if let Some(addr) = super::remote::server_address(dir)? {
        bail!(
            "`weir serve` holds the data directory; consume as group `{group}` through it with a Kafka client, e.g. kcat -b {addr} -G {group} {}",
            args.topic
        );
    }
    let log = super::open_log(dir, false)
        .context("consume --group commits offsets and needs the data directory")?;
    let partitions = log.partition_count(&args.topic)?;
    let coord = GroupCoordinator::start(&log)?;
    let mut cfg = ConsumerConfig::new(group.clone());
    cfg.client_id = "weir-cli".into();
    cfg.auto_commit_interval = None;
    cfg.isolation = parse_isolation(&args.isolation)?;
    cfg.auto_offset_reset = match args.offset.as_str() {
        "earliest" => OffsetReset::Earliest,
        "latest" => OffsetReset::Latest,
        other => bail!("--offset `{other}` with --group: expected earliest or latest (the group's offsets decide the rest)"),
    };
    if let Some(m) = args.max_messages {
        cfg.max_poll_records = cfg.max_poll_records.min(m.max(1) as usize);
    }
    let mut consumer = Consumer::new(&coord, cfg);
    consumer.subscribe(&[args.topic.as_str()])?;
    let ends: Vec<_> = (0..partitions)
        .map(|p| log.latest_offset(&args.topic, PartitionId(p)))
        .collect::<Result<_, _>>()?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    loop {
        let remaining = args.max_messages.map(|m| m - printed);
        let records = consumer.poll(Duration::from_millis(200))?;
        let take = remaining.map_or(records.len(), |r| (r as usize).min(records.len()));
        for r in &records[..take] {
            let fields = Fields {
                topic: &r.topic,
                partition: r.partition,
                offset: r.offset.0,
                timestamp: r.timestamp.0,
                key: r.key.as_deref(),
                value: r.value.as_deref(),
                headers: r
                    .headers
                    .iter()
                    .map(|h| (h.key.as_bytes(), h.value.as_deref()))
                    .collect(),
            };
            if let Err(e) = format.write_fields(&mut out, &fields) {
                if e.kind() == ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e.into());
            }
        }
        printed += take as u64;
        if take < records.len() {
            // Commit only what was printed.
            let first_unprinted = &records[take];
            consumer.seek(
                &first_unprinted.topic,
                first_unprinted.partition,
                first_unprinted.offset,
            )?;
        }
        out.flush()?;
        consumer.commit()?;
        if args.max_messages.is_some_and(|m| printed >= m) {
            break;
        }
        let caught_up = consumer.assignment().iter().all(|(t, p)| {
            consumer
                .position(t, *p)
                .is_some_and(|o| o >= ends[*p as usize])
        });
        if !args.follow && records.is_empty() && caught_up {
            break;
        }
    }
    consumer.close()?;
    Ok(())
}
