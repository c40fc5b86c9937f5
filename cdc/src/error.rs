//! [`CdcError`]: what stopped a change data capture source, sorted by whose fault it is.

/// A CDC source's error.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    /// The source database refused, failed or is unreachable (retried by the runner).
    #[error("PostgreSQL: {0}")]
    Source(String),
    /// The configuration cannot work (a missing publication's tables, a lost slot).
    #[error("{0}")]
    Config(String),
    /// Weir's log refused a write.
    #[error("log: {0}")]
    Log(#[from] weir_log::LogError),
    /// Weir's transaction coordinator refused (a newer instance of the source fenced this one).
    #[error("transaction: {0}")]
    Coord(#[from] weir_coord::CoordError),
}

impl From<tokio_postgres::Error> for CdcError {
    fn from(e: tokio_postgres::Error) -> CdcError {
        CdcError::Source(match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        })
    }
}

/// A CDC result.
pub type Result<T> = std::result::Result<T, CdcError>;
