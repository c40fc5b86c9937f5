//! `weir topic …`: create, list, describe, delete, compact.

use std::path::Path;

use anyhow::Result;
use weir_log::TopicConfig;

use crate::cli::TopicCmd;

pub fn run(dir: &Path, cmd: TopicCmd) -> Result<()> {
    if matches!(cmd, TopicCmd::Create { .. } | TopicCmd::Delete { .. }) {
        if let Some(mut client) = super::remote::client(dir)? {
            return remote(&mut client, cmd);
        }
    }
    // Listing and describing work alongside a writing process; changes need the lock.
    let read_only = matches!(cmd, TopicCmd::List | TopicCmd::Describe { .. });
    let log = if read_only {
        super::open_log_read_only(dir)?
    } else {
        super::open_log(dir, false)?
    };
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            config,
        } => {
            let overrides = TopicConfig::parse_pairs(&config)?;
            log.create_topic(&name, partitions, overrides)?;
            println!("created topic `{name}` with {partitions} partition(s)");
        }
        TopicCmd::List => {
            for name in log.list_topics() {
                println!("{name}\t{} partition(s)", log.partition_count(&name)?);
            }
        }
        TopicCmd::Describe { name } => {
            let d = log.describe_topic(&name)?;
            println!("topic {}  partitions {}", d.name, d.partitions.len());
            println!(
                "{:>9}  {:>14}  {:>14}  {:>14}  {:>8}",
                "PARTITION", "START", "END", "BYTES", "SEGMENTS"
            );
            for p in &d.partitions {
                println!(
                    "{:>9}  {:>14}  {:>14}  {:>14}  {:>8}",
                    p.id, p.log_start, p.high_watermark, p.bytes, p.segments
                );
            }
            println!("config:");
            for (k, v, set) in &d.config {
                println!("  {k}={v}{}", if *set { "" } else { "  (default)" });
            }
        }
        TopicCmd::Delete { name } => {
            log.delete_topic(&name)?;
            println!("deleted topic `{name}`");
        }
        TopicCmd::Compact { name } => {
            // An explicit request: seal the active segments first, which compaction never
            // touches, so that every record written so far is compacted.
            log.roll(&name)?;
            let s = log.compact_topic(&name)?;
            println!(
                "compacted `{name}`: {} segment(s) in, {} out; {} records -> {}; {} bytes -> {}",
                s.segments_in, s.segments_out, s.records_in, s.records_out, s.bytes_in, s.bytes_out
            );
            if s.segments_in == 0 {
                println!("nothing to compact: `{name}` holds no records");
            }
        }
    }
    Ok(())
}

/// Create and delete through a running `weir serve`.
fn remote(client: &mut weir_kafka::Client, cmd: TopicCmd) -> Result<()> {
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            config,
        } => {
            let overrides: Vec<(String, String)> =
                TopicConfig::parse_pairs(&config)?.into_iter().collect();
            client.create_topic(&name, partitions, &overrides)?;
            println!("created topic `{name}` with {partitions} partition(s)");
        }
        TopicCmd::Delete { name } => {
            client.delete_topic(&name)?;
            println!("deleted topic `{name}`");
        }
        _ => {}
    }
    Ok(())
}
