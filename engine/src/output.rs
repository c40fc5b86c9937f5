//! A task's outputs between commits: records already placed in their partitions, and the
//! writing of outputs and changelogs in batches that fit a topic's `max.message.bytes`.
//!
//! Outputs are bounded by the task (`max_buffered_records`): they wait here only until the next
//! commit, which writes them inside the task's transaction (or, under at-least-once, before its
//! offsets).

use std::sync::Arc;

use weir_log::{Log, Offset, PartitionId, Record};

use crate::error::Result;
use crate::state::KvStore;

/// Outputs of the open commit interval, already placed in their partitions (Kafka's murmur2
/// partitioner for keyed records; keyless records go to one partition per interval, rotating).
#[derive(Debug)]
pub(crate) struct Sinks {
    pub(crate) log: Log,
    topics: Vec<SinkBuffer>,
    pub(crate) len: usize,
    /// Partition for keyless records this interval.
    rotation: u32,
}

#[derive(Debug)]
struct SinkBuffer {
    topic: Arc<str>,
    partitions: Vec<Vec<Record>>,
}

impl Sinks {
    pub(crate) fn new(log: &Log) -> Sinks {
        Sinks {
            log: log.clone(),
            topics: Vec::new(),
            len: 0,
            rotation: 0,
        }
    }

    /// The buffer of `topic`, made on its first use.
    fn index(&mut self, topic: &str) -> Result<usize> {
        // A task writes a handful of topics: a scan beats hashing the name.
        Ok(match self.topics.iter().position(|s| &*s.topic == topic) {
            Some(i) => i,
            None => {
                let n = self.log.partition_count(topic)?;
                self.topics.push(SinkBuffer {
                    topic: Arc::from(topic),
                    partitions: (0..n).map(|_| Vec::new()).collect(),
                });
                self.topics.len() - 1
            }
        })
    }

    pub(crate) fn emit(&mut self, topic: &str, record: Record) -> Result<()> {
        let i = self.index(topic)?;
        let sink = &mut self.topics[i];
        let n = sink.partitions.len() as u32;
        let p = match &record.key {
            Some(k) => weir_log::partitioner::partition_for_key(k, n).0,
            None => self.rotation % n.max(1),
        };
        sink.partitions[p as usize].push(record);
        self.len += 1;
        Ok(())
    }

    /// Emits a record to one partition of a topic.
    pub(crate) fn emit_to(&mut self, topic: &str, partition: u32, record: Record) -> Result<()> {
        let i = self.index(topic)?;
        let sink = &mut self.topics[i];
        let n = sink.partitions.len();
        let slot = sink.partitions.get_mut(partition as usize).ok_or_else(|| {
            crate::error::EngineError::Internal(format!(
                "partition {partition} of `{topic}`, which has {n}"
            ))
        })?;
        slot.push(record);
        self.len += 1;
        Ok(())
    }

    /// Takes the buffered outputs: (topic, partition, records), non-empty only.
    pub(crate) fn take(&mut self) -> Vec<(Arc<str>, u32, Vec<Record>)> {
        self.len = 0;
        self.rotation = self.rotation.wrapping_add(1);
        let mut out = Vec::new();
        for s in &mut self.topics {
            for (p, records) in s.partitions.iter_mut().enumerate() {
                if !records.is_empty() {
                    out.push((s.topic.clone(), p as u32, std::mem::take(records)));
                }
            }
        }
        out
    }
}

/// Bytes of records per transactional batch: well under the default `max.message.bytes`.
const OUTPUT_BATCH_BYTES: usize = 512 * 1024;

/// Hands `records` for `topic` to `write` in runs that fit one batch of that topic.
pub(crate) fn in_batches(
    log: &Log,
    topic: &str,
    records: &[Record],
    mut write: impl FnMut(&[Record]) -> Result<()>,
) -> Result<()> {
    for chunk in chunks(records, batch_limit(log, topic)?) {
        write(chunk)?;
    }
    Ok(())
}

/// Writes every store's staged changelog records with `send` (which returns the offset of the
/// last record it wrote); returns, per store, the last offset written (`None`: nothing staged).
pub(crate) fn write_changelogs(
    log: &Log,
    stores: &mut [KvStore],
    mut send: impl FnMut(&str, PartitionId, &[Record]) -> Result<Offset>,
) -> Result<Vec<Option<Offset>>> {
    let mut last_changelog = vec![None; stores.len()];
    for (i, store) in stores.iter_mut().enumerate() {
        if store.stage().is_empty() {
            continue;
        }
        let (topic, partition) = store.changelog();
        in_batches(log, topic, store.staged(), |chunk| {
            last_changelog[i] = Some(send(topic, partition, chunk)?);
            Ok(())
        })?;
    }
    Ok(last_changelog)
}

/// Bytes of records one output batch may carry on `topic`: `OUTPUT_BATCH_BYTES`, or less when
/// the topic's `max.message.bytes` is smaller (less the batch header and some slack).
fn batch_limit(log: &Log, topic: &str) -> Result<usize> {
    let max = log.topic_config(topic)?.max_message_bytes;
    Ok(OUTPUT_BATCH_BYTES.min(max.saturating_sub(1024)).max(1))
}

/// An upper bound of a record's encoded size in a batch: its key, value and headers plus the
/// varint framing (at most 5 bytes per length or delta, a few of them).
fn encoded_size(r: &Record) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|h| 10 + h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    32 + r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + headers
}

/// Splits records into runs whose encoded size stays under `limit` bytes (a record larger than
/// that goes alone, and the log rejects it with `RecordTooLarge`, naming the topic).
fn chunks(records: &[Record], limit: usize) -> Vec<&[Record]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0usize, 0usize);
    for (i, r) in records.iter().enumerate() {
        let size = encoded_size(r);
        if i > start && bytes + size > limit {
            out.push(&records[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}
