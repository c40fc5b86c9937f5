//! # weir-log
//!
//! Weir's built-in partitioned, append-only log with key compaction: the storage every other
//! part of Weir (sources, changelogs, offsets, transactions) stands on.
//!
//! Main types:
//! - [`Log`]: a data directory of topics; create, append, send, read, long-poll, look up.
//! - [`Record`] / [`RecordView`]: what producers give and readers get.
//! - [`BatchBuilder`] / [`EncodedBatch`]: Kafka RecordBatch v2, the on-disk and wire format.
//! - [`TopicConfig`] / [`FlushPolicy`]: Kafka's topic keys, validated.
//! - [`Producer`]: the idempotent producer (retries never duplicate).
//! - [`Storage`]: the I/O trait; [`sim::SimStorage`] injects power loss, torn writes, ENOSPC.
//!
//! ```
//! use weir_log::{Log, Offset, PartitionId, Record};
//! let dir = tempfile::tempdir()?;
//! let log = Log::open(dir.path())?;
//! log.create_topic("orders", 3, Default::default())?;
//! let ack = log.append("orders", PartitionId(0), &[Record::keyed("o-1", "created")])?;
//! assert_eq!(ack.base_offset, Offset(0));
//! let fetch = log.read("orders", PartitionId(0), Offset(0), 1 << 20)?;
//! let rec = fetch.records().next().expect("one record")?;
//! assert_eq!(rec.value, Some(&b"created"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod batch;
mod cleaner;
pub mod clock;
pub mod config;
mod error;
mod fsync_stats;
mod handles;
mod index;
#[allow(clippy::module_inception)]
mod log;
mod partition;
pub mod partitioner;
mod producer;
pub mod producer_state;
mod queue;
mod record;
mod segment;
pub mod sim;
pub mod storage;
mod topic;
mod types;
mod writer;

pub use batch::{BatchBuilder, BatchHeader, BatchIter, BatchView, EncodedBatch, ProducerFields};
pub use cleaner::CompactionStats;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{FlushPolicy, TimestampType, TopicConfig};
pub use error::{LogError, Result};
pub use fsync_stats::{FsyncLatency, FsyncStats};
pub use log::{AppendListener, AppendTicket, Log, LogOptions, TopicDescription};
pub use partition::{Fetch, Isolation, PartitionInfo};
pub use producer::{Producer, ProducerOptions, Submitted};
pub use queue::AppendOutcome;
pub use record::{Header, Record, RecordView};
pub use storage::{FsStorage, Storage};
pub use types::{Offset, PartitionId, Timestamp};
