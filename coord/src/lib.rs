//! # weir-coord
//!
//! Coordination over Weir's log, with Kafka's semantics so the Kafka wire server can map
//! Kafka's APIs straight onto it:
//! - [`GroupCoordinator`]: consumer groups (classic protocol: members, generations, leader-
//!   computed assignment, heartbeats, session and rebalance timeouts), committed offsets in the
//!   compacted `__consumer_offsets` topic, lag, reset and delete.
//! - [`Consumer`]: the embedded group consumer (subscribe, poll, commit, seek, pause/resume,
//!   rebalance callbacks, `auto.offset.reset`, `read_committed`).
//! - [`TransactionCoordinator`] / [`TransactionalProducer`]: transactions (zombie fencing,
//!   markers, offsets committed atomically with outputs, timeouts, recovery).
//! - [`Assignor`]: the range and round-robin assignors.
//!
//! ```
//! use std::time::Duration;
//! use weir_coord::{Consumer, ConsumerConfig, GroupCoordinator, OffsetReset};
//! let dir = tempfile::tempdir()?;
//! let log = weir_log::Log::open(dir.path())?;
//! log.create_topic("orders", 2, Default::default())?;
//! log.send("orders", Some(b"alice"), Some(b"created"))?;
//! let coord = GroupCoordinator::start(&log)?;
//! let mut cfg = ConsumerConfig::new("billing");
//! cfg.auto_offset_reset = OffsetReset::Earliest;
//! let mut consumer = Consumer::new(&coord, cfg);
//! consumer.subscribe(&["orders"])?;
//! let records = consumer.poll(Duration::from_secs(5))?;
//! assert_eq!(records.len(), 1);
//! consumer.commit()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod assignor;
mod consumer;
mod error;
mod group;
pub mod offsets;
mod producer;
mod protocol;
mod ticker;
mod txn;

pub use assignor::{Assignment, Assignor, Subscriptions};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, RebalanceListener};
pub use error::{CoordError, Result};
pub use group::{
    reset_targets, GroupCoordinator, GroupDescription, GroupState, JoinRequest, JoinResponse,
    MemberDescription, PartitionLag,
};
pub use producer::TransactionalProducer;
pub use protocol::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription,
};
pub use txn::{start, TransactionCoordinator, TxnMeta, TxnState, TXN_STATE_TOPIC};
