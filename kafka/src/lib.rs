//! # weir-kafka
//!
//! The Kafka wire protocol over Weir's log and coordinators: Kafka producers, consumers,
//! admin clients and CLIs (librdkafka, the Java client's heirs, kafka-python, kafkajs, kcat)
//! work against Weir unmodified. Requests and responses are `kafka-protocol`'s generated
//! types; Fetch serves the stored RecordBatch bytes as they are on disk.
//!
//! Main types:
//! - [`Broker`]: what every request shares (log, group and transaction coordinators, the
//!   advertised address).
//! - [`KafkaListener`]: the TCP listener; `serve` runs it inside your tokio runtime.
//! - [`ServerHandle`]: the listener on a runtime of its own, for non-async applications.
//! - [`ServeError`]: why the server could not start.
//! - [`Client`]: a small blocking client, for the command line beside a running server.
//!
//! ```no_run
//! use weir_kafka::{Broker, ServerConfig, ServerHandle};
//! let log = weir_log::Log::open("data")?;
//! let (groups, txns) = weir_coord::start(&log)?;
//! let broker = Broker::new(log, groups, txns, true);
//! let config = ServerConfig { kafka_listen: Some("127.0.0.1:9092".into()), ..Default::default() };
//! let server = ServerHandle::start(broker, &config)?;
//! println!("Kafka clients can connect to {:?}", server.kafka_addr());
//! server.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod api;
mod broker;
pub mod client;
mod conn;
mod error;
mod frame;
mod http;
pub mod limits;
mod metrics;
mod server;

pub use broker::Broker;
pub use client::{Client, ClientError};
pub use error::ServeError;
pub use http::{request as http_request, Control, HTTP_CONNECTIONS_MAX, HTTP_REQUEST_BYTES_MAX};
pub use server::{
    parse_host_port, KafkaListener, ServerConfig, ServerHandle, HTTP_LISTEN_FLAG, KAFKA_LISTEN_FLAG,
};
