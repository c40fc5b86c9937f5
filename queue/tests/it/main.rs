//! `weir-queue` integration tests: the share-partition state machine against a simple
//! in-memory model, over seeded random interleavings (the seed is printed); and queues over
//! a real log — the SQS flows through the Rust API, restarts, snapshots.

mod model;
mod power_loss;
mod queues;
mod txn_ack;
