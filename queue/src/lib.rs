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
//!   Time is passed in, never read there, so its model-based test can run any interleaving.
//! - [`journal`]: the compact binary form of those changes, one state-topic record each.
//! - [`Queue`]: one queue over its topic and its state topic: send (delays, groups, FIFO
//!   deduplication), receive with long polling, ack, nack, change visibility, reject, purge,
//!   redrive, stats; journaled before answering, snapshotted, rebuilt after a crash.
//! - [`Queues`]: the catalog — create, get, list, delete by name; subscriptions of queues to
//!   topics (fan-out), filtered by key pattern or header policy ([`filter`]), copied exactly
//!   once.
//! - [`Queue::ack_in_transaction`] / [`TransactionalAck`]: acks committed in a caller's
//!   transaction (an engine task's), for exactly-once consumption.
//! - [`Requester`] / [`Queues::reply`]: request–reply with `reply-to` and `correlation-id`.

pub mod catalog;
pub mod error;
mod fanout;
pub mod filter;
pub mod journal;
mod moves;
pub mod partition;
mod pending;
mod queue;
mod receive;
mod reply;
mod send;
mod service;
mod settle;
mod stats;
mod txn_ack;
mod wait;

pub use catalog::{QueueConfig, Redrive, Subscription, CATALOG_TOPIC, SUBSCRIPTIONS_TOPIC};
pub use error::{QueueError, Result};
pub use fanout::{
    subscription_group, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC,
};
pub use filter::Filter;
pub use moves::{
    HEADER_DLQ_DELIVERIES, HEADER_DLQ_ERROR, HEADER_DLQ_SOURCE_OFFSET, HEADER_DLQ_SOURCE_PARTITION,
    HEADER_DLQ_SOURCE_QUEUE, HEADER_DLQ_TIME, REDRIVE_BATCH,
};
pub use partition::{
    Acquired, Admission, Change, Delivery, Incoming, Persisted, QueueSettings, Receipt,
    SharePartition, Verdict, IN_FLIGHT_MAX,
};
pub use pending::Pending;
pub use queue::{
    state_topic, Message, Queue, Received, HEADER_ATTRIBUTE_TYPES, HEADER_DEDUP_ID,
    HEADER_VISIBLE_AT, RECEIVE_MAX, RESERVED_HEADER_PREFIX, SNAPSHOT_AFTER_BYTES,
    WINDOW_BODY_BYTES_MAX,
};
pub use receive::FILL_READ_BYTES;
pub use reply::{Requester, HEADER_CORRELATION_ID, HEADER_REPLY_TO, REPLIES_PENDING_MAX};
pub use send::{Outgoing, Sent, DEDUP_IDS_MAX, ID_BYTES_MAX, MESSAGE_BYTES_MAX};
pub use service::Queues;
pub use settle::Settled;
pub use stats::QueueStats;
pub use txn_ack::TransactionalAck;
pub use wait::{block_until, Changed};
