//! # weir-pg
//!
//! The Postgres wire protocol over Weir SQL: psql, psycopg and other Postgres drivers connect
//! to `weir serve --pg-listen` and run the dialect of `weir-sql` (DDL, `INSERT`, batch and
//! pull queries, with parameters through the extended protocol) and `SUBSCRIBE`, which
//! streams a view's or a stream's changes as they land (`COPY (SUBSCRIBE TO v) TO STDOUT`).
//! The protocol itself is the `pgwire` crate's; this crate maps sessions, statements, rows
//! and errors onto it.
//!
//! Main types:
//! - [`PgListener`]: the TCP listener; `serve` runs it inside your tokio runtime.
//! - [`PgServerHandle`]: the listener on a runtime of its own, for non-async applications.
//! - [`PgServeError`]: why the server could not start.
//!
//! Each connection gets a [`weir_sql::Session`] of its own from one shared
//! [`weir_sql::Database`]: what one connection creates, the others see. Statements run on
//! the runtime's blocking pool, never on its I/O threads.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod conn;
mod encode;
mod error;
mod params;
mod server;
mod subscribe;

pub use error::PgServeError;
pub use server::{PgListener, PgServerHandle, PG_CONNECTIONS_MAX, PG_LISTEN_FLAG};
pub use subscribe::SUBSCRIPTIONS_MAX;
