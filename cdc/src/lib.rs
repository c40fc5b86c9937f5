//! `weir-cdc`: change data capture into Weir's log, and read models out of it, without a
//! Kafka Connect cluster.
//!
//! [`PgSource`] reads PostgreSQL — a snapshot of the published tables, then their changes
//! from a logical replication slot through the wal2json plugin — and writes Debezium change
//! events (`weir_engine`'s `changes` reads them; SQL's `format = 'debezium_json'`), one topic
//! per table keyed by primary key, exactly once: events and the source's [`Progress`] commit
//! in one log transaction, and the slot is advanced after it.
//!
//! [`PgSink`] applies a relation's rows and changes to a PostgreSQL table, each batch in one
//! PostgreSQL transaction with the positions it reached (`weir_sink_offsets`).
//!
//! Modules: [`lsn`] (PostgreSQL positions), [`snapshot`] (where the snapshot and the stream
//! meet), [`wal2json`] (the plugin's output as transactions), [`progress`] (the source's
//! position in the log), [`postgres`] (the source), [`pg_sink`] (the sink).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod lsn;
mod pg;
pub mod pg_sink;
pub mod postgres;
pub mod progress;
pub mod snapshot;
pub mod wal2json;

pub use error::{CdcError, Result};
pub use lsn::Lsn;
pub use pg_sink::{pg_type, run_sink_until_stopped, PgSink, PgSinkConfig, SinkColumn, SinkStatus};
pub use postgres::{run_until_stopped, PgSource, PgSourceConfig};
pub use progress::{Progress, CDC_STATE_TOPIC};

/// The PostgreSQL server of this machine's tests, demo and benchmarks: `WEIR_PG_URL`, or the
/// URL `scripts/postgres.sh` (run by the set-up) wrote to `$WEIR_CACHE/postgres.url`.
pub fn local_server_url() -> Result<String> {
    if let Ok(url) = std::env::var("WEIR_PG_URL") {
        return Ok(url);
    }
    let cache = std::env::var("WEIR_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/weir", std::env::var("HOME").unwrap_or_default()));
    let path = format!("{cache}/postgres.url");
    std::fs::read_to_string(&path)
        .map(|u| u.trim().to_string())
        .map_err(|e| {
            CdcError::Config(format!(
                "no local PostgreSQL ({path}: {e}); run scripts/postgres.sh"
            ))
        })
}
