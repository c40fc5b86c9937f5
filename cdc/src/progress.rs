//! A source's progress, kept in the log: the compacted topic [`CDC_STATE_TOPIC`], one record
//! per source (keyed by its name), written in the same log transaction as the events it
//! covers. So what the log holds and where the source resumes never disagree; the slot is
//! advanced only after that transaction commits, and a restart skips what the slot still
//! holds below the recorded LSN.

use serde::{Deserialize, Serialize};
use weir_log::{Isolation, Log, Offset, PartitionId, Record};

use crate::error::{CdcError, Result};
use crate::lsn::Lsn;
use crate::snapshot::Snapshot;

/// The compacted topic of sources' progress.
pub const CDC_STATE_TOPIC: &str = "__weir_cdc_state";

/// Where a source is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The snapshot's visibility, once it is written.
    pub snapshot: Option<Snapshot>,
    /// The slot's start: the position of every snapshot row.
    pub start: u64,
    /// The end of the last transaction whose changes are in the log.
    pub lsn: u64,
    /// Transactions written, and skipped as the snapshot's.
    pub transactions: u64,
    /// Change events written (snapshot rows included).
    pub events: u64,
}

impl Progress {
    /// The end of the last transaction in the log.
    pub fn lsn(&self) -> Lsn {
        Lsn(self.lsn)
    }

    /// Its record.
    pub(crate) fn record(&self, source: &str) -> Result<Record> {
        let value = serde_json::to_vec(self)
            .map_err(|e| CdcError::Config(format!("progress of `{source}`: {e}")))?;
        Ok(Record::keyed(source.as_bytes().to_vec(), value))
    }

    /// The committed progress of `source` (none yet: the default).
    pub fn load(log: &Log, source: &str) -> Result<Progress> {
        ensure_topic(log)?;
        let mut latest = None;
        log.for_each_record(
            CDC_STATE_TOPIC,
            PartitionId(0),
            Offset(0),
            Isolation::ReadCommitted,
            |r| {
                if r.key == Some(source.as_bytes()) {
                    latest = r.value.map(<[u8]>::to_vec);
                }
                Ok::<(), weir_log::LogError>(())
            },
        )?;
        match latest {
            None => Ok(Progress::default()),
            Some(v) => serde_json::from_slice(&v).map_err(|e| {
                CdcError::Config(format!("the progress of `{source}` does not read: {e}"))
            }),
        }
    }
}

/// Forgets `source`'s progress (a tombstone): its next run takes a new snapshot.
pub fn forget(log: &Log, source: &str) -> Result<()> {
    ensure_topic(log)?;
    log.append(
        CDC_STATE_TOPIC,
        PartitionId(0),
        &[Record::tombstone(source.as_bytes().to_vec())],
    )?;
    Ok(())
}

fn ensure_topic(log: &Log) -> Result<()> {
    if log.partition_count(CDC_STATE_TOPIC).is_err() {
        let config = weir_log::TopicConfig::parse_pairs(&["cleanup.policy=compact"])?;
        match log.create_topic(CDC_STATE_TOPIC, 1, config) {
            Ok(()) | Err(weir_log::LogError::TopicExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
