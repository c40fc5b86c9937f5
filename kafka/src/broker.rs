//! [`Broker`]: what every request handler shares — the log, the group and transaction
//! coordinators, and this node's identity as clients see it (node 0, the advertised address,
//! the cluster id). Weir is one node: it leads every partition, coordinates every group and
//! transactional id, and advertises itself as the only broker.

use std::sync::{Arc, OnceLock};

use weir_coord::{GroupCoordinator, TransactionCoordinator};
use weir_log::Log;

use crate::metrics::Metrics;

/// This node's id in every response (leader, coordinator, controller).
pub(crate) const NODE_ID: i32 = 0;

/// Topics only the coordinators write: clients may read them but never produce to, delete,
/// truncate, repartition or reconfigure them (a stray record there would stop the next start).
pub(crate) fn is_internal(topic: &str) -> bool {
    topic == weir_coord::offsets::OFFSETS_TOPIC
        || topic == weir_coord::TXN_STATE_TOPIC
        || topic.starts_with(WEIR_INTERNAL_PREFIX)
}

/// Topics Weir's own components keep (the SQL catalog `__weir_catalog`, materialized views'
/// `__weir_view.NAME`): readable by clients, never written, reconfigured or deleted by them.
pub const WEIR_INTERNAL_PREFIX: &str = "__weir_";

/// The error for a client's attempt to change an internal topic.
pub(crate) fn internal_refused(topic: &str) -> (kafka_protocol::ResponseError, String) {
    (
        kafka_protocol::ResponseError::InvalidTopicException,
        format!("`{topic}` is internal to Weir (its coordinators, SQL catalog or views)"),
    )
}

/// The state shared by all connections of one server.
#[derive(Debug)]
pub struct Broker {
    pub(crate) log: Log,
    pub(crate) groups: GroupCoordinator,
    pub(crate) txns: TransactionCoordinator,
    /// `host:port` that Metadata and FindCoordinator hand to clients; set once the listener
    /// is bound (so port 0 advertises the port the OS chose).
    pub(crate) advertised: OnceLock<(String, i32)>,
    pub(crate) cluster_id: String,
    /// Kafka's `auto.create.topics.enable`.
    pub(crate) auto_create_topics: bool,
    pub(crate) metrics: Metrics,
}

impl Broker {
    /// A broker over an open log and its coordinators (from [`weir_coord::start`]).
    pub fn new(
        log: Log,
        groups: GroupCoordinator,
        txns: TransactionCoordinator,
        auto_create_topics: bool,
    ) -> Arc<Broker> {
        Arc::new(Broker {
            log,
            groups,
            txns,
            advertised: OnceLock::new(),
            cluster_id: "weir".to_string(),
            auto_create_topics,
            metrics: Metrics::default(),
        })
    }

    /// The log this broker serves.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The advertised host and port (before the listener is bound: loopback, port 0).
    pub(crate) fn advertised(&self) -> (String, i32) {
        self.advertised
            .get()
            .cloned()
            .unwrap_or_else(|| ("127.0.0.1".to_string(), 0))
    }
}
