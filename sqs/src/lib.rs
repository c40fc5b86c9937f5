//! # weir-sqs
//!
//! An SQS-compatible HTTP API over [`weir_queue`], so boto3 and the AWS SDKs work against
//! Weir unmodified: the JSON protocol (`X-Amz-Target: AmazonSQS.<Action>`) that current SDKs
//! speak, SigV4 signatures verified against configured credentials, SQS's errors and limits.
//!
//! - [`server`]: the listener ([`SqsServerHandle`]), HTTP/1.1 with keep-alive.
//! - [`auth`]: SigV4 verification.
//! - `api` / `messages` / `settings`: the actions.
//! - [`attrs`]: queue attributes to and from settings; message attributes to and from record
//!   headers; MD5 digests.
//! - [`error`]: [`SqsError`], SQS's error shapes and query-compatible codes.
//! - [`client`]: [`SqsClient`], a small blocking client (tools and tests).
//! - [`metrics`]: the queues' Prometheus metrics for `weir serve`'s `/metrics`.
//!
//! An edge crate: it depends on the libraries, nothing depends on it but the `weir` binary.

mod api;
pub mod attrs;
pub mod auth;
pub mod client;
pub mod error;
mod messages;
pub mod metrics;
pub mod server;
mod settings;

pub use auth::Credentials;
pub use client::{ClientError, SqsClient};
pub use error::SqsError;
pub use messages::{message_id, BATCH_ENTRIES_MAX, RECEIVE_MAX, SEND_BYTES_MAX, WAIT_MAX_S};
pub use server::{
    SqsConfig, SqsServeError, SqsServerHandle, SQS_CONNECTIONS_MAX, SQS_REQUEST_BYTES_MAX,
};

pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
