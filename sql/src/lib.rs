//! `weir-sql`: Weir's SQL front end on DataFusion.
//!
//! Statements are parsed by DataFusion's SQL parser (sqlparser) with the dialect's own
//! statements added ([`parser`]); streams and tables live in a catalog persisted in the log
//! ([`catalog`]); their records are decoded into Arrow batches ([`format`]) by parallel
//! per-partition scans ([`scan`]); and a [`Session`] runs statements: DDL, `INSERT … VALUES`,
//! and queries planned and executed by DataFusion over what the log holds when they run.
//! Persistent queries (`CREATE SINK`, `INSERT INTO … SELECT`, [`queries`]) are compiled onto
//! the engine ([`stream`]) and run, exactly once, for as long as a session with an
//! [`Engine`] lives; `datagen` streams ([`datagen`]) generate their rows.
//!
//! Errors are typed and located ([`SqlError`]): line and column in the statement, and a
//! "did you mean" hint where one exists.

pub mod catalog;
mod cdc_source;
mod changes;
mod connector;
pub mod datagen;
mod ddl;
mod error;
pub mod format;
mod insert;
pub mod parser;
mod pg_catalog;
mod pg_sink;
pub mod pull;
mod push;
pub mod queries;
pub mod scan;
mod session;
pub mod stream;
pub mod subscribe;
pub mod types;
mod wildcard;
pub mod window;

pub use datafusion;
pub use error::{At, Hint, Position, Result, SqlError};
pub use parser::{parse, WeirStatement, STATEMENT_BYTES_MAX};
pub use push::PushRequest;
pub use queries::{query_app, Engine, QueryHost};
pub use session::{Database, Described, Outcome, Output, Session, RESULT_ROWS_MAX};
pub use subscribe::Subscription;

/// Renders rows as an aligned text table (what `weir sql` prints).
pub fn render_rows(
    batches: &[datafusion::arrow::record_batch::RecordBatch],
) -> std::result::Result<String, SqlError> {
    datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .map(|t| t.to_string())
        .map_err(|e| SqlError::Execution(format!("cannot render the result: {e}")))
}

/// The Postgres version Weir's Postgres surface reports (`version()`, `server_version`).
pub use pg_catalog::SERVER_VERSION;
