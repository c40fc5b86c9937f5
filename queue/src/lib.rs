//! Queues on Weir's log: each message goes to one of many competing consumers, is done when
//! acknowledged, comes back when its consumer's lock times out, and moves to a dead-letter
//! queue after too many deliveries — SQS and RabbitMQ work queues, on the partitioned log, so
//! a message can still be replayed after it was acknowledged.
//!
//! - [`partition`]: [`SharePartition`], the state machine of one partition of a queue's
//!   topic, as Kafka's share groups (KIP-932) keep it: a start offset below which every
//!   message is done, and a bounded window of in-flight messages above it (available,
//!   acquired under a lease with a deadline, acknowledged, or dead-lettered), with delivery
//!   counts, per-message delays and FIFO message groups; its changes as a journal
//!   ([`Change`]) to write before answering, and [`SharePartition::restore`] from it.
//!
//! Time is passed in (epoch milliseconds), never read here, so the state machine is
//! deterministic and its model-based test can run any interleaving.

pub mod error;
pub mod partition;

pub use error::{QueueError, Result};
pub use partition::{
    Acquired, Change, Delivery, Incoming, Persisted, QueueSettings, Receipt, SharePartition,
    Verdict, IN_FLIGHT_MAX,
};
