//! Every limit of the Kafka server, as a named constant with the reason for its value. A
//! client can make the server hold at most `CONNECTIONS_MAX × IN_FLIGHT_REQUESTS_MAX` requests
//! of at most `FRAME_BYTES_MAX` each, plus their responses; nothing else grows with clients.

use std::time::Duration;

/// Largest request frame accepted, checked against the length prefix before any allocation.
/// Kafka's `socket.request.max.bytes` default (100 MiB) is far above what a produce request
/// needs; 64 MiB holds a full `max.request.size` of every librdkafka default several times.
pub const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Open connections at once; further connections are accepted and closed at once, so a
/// client sees a clean disconnect rather than a hang in the listen backlog.
pub const CONNECTIONS_MAX: usize = 1024;

/// Requests read ahead of their responses on one connection. Responses still go out in
/// request order (Kafka's rule); reading ahead lets produce requests of one connection share
/// a group commit. librdkafka's `max.in.flight` default is 5 per connection (1,000,000 when
/// idempotence is off, which this cap bounds).
pub const IN_FLIGHT_REQUESTS_MAX: usize = 16;

/// Longest long-poll a fetch may ask for (`fetch.max.wait.ms`); longer asks are capped so a
/// connection's queue keeps moving.
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

/// Most bytes one fetch response carries, whatever the request says (Kafka's
/// `fetch.max.bytes` broker default is 55 MiB; responses are held whole in memory).
pub const FETCH_RESPONSE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// How long graceful shutdown waits for in-flight requests before closing connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Partitions of a topic created automatically (Kafka's `num.partitions` default is 1; a
/// topic created by producing to it is usually a test or a demo, where one partition keeps
/// order obvious). `CreateTopics` asks for its own count.
pub const AUTO_CREATE_PARTITIONS: u32 = 1;

/// Partitions a `CreateTopics` request may ask for per topic: the log opens a directory and
/// a writer per partition.
pub const CREATE_PARTITIONS_MAX: i32 = 10_000;
