//! Errors: [`PgServeError`] (the server could not start) and the mapping of Weir SQL errors to
//! Postgres error responses (SQLSTATE codes, and the position psql marks with a caret).

use pgwire::error::{ErrorInfo, PgWireError};
use weir_sql::{Position, SqlError};

/// Why the Postgres listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum PgServeError {
    /// The address does not parse or cannot be bound (in use, not ours).
    #[error("cannot listen on {addr} for Postgres clients: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime could not start (threads).
    #[error("cannot start the Postgres server's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// SQLSTATE of a Weir SQL error, by whose fault it is.
fn sqlstate(e: &SqlError) -> &'static str {
    match e {
        SqlError::Syntax { .. } => "42601",
        SqlError::UnknownRelation { .. } => "42P01",
        SqlError::Exists { .. } => "42P07",
        SqlError::Unsupported { .. } => "0A000",
        SqlError::BadOption { .. } => "22023",
        SqlError::TooLong { .. } => "54000",
        SqlError::BadValue { .. } => "22000",
        SqlError::Plan { .. } => "42000",
        SqlError::Log(_) | SqlError::CorruptCatalog { .. } => "58000",
        SqlError::Execution(_) => "XX000",
    }
}

/// A Weir SQL error as the error response a client shows; `sql` is the statement's text, for
/// the position (a 1-based character index, as Postgres reports it).
pub(crate) fn error_info(e: &SqlError, sql: &str) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".into(), sqlstate(e).into(), e.to_string());
    info.position = e
        .position()
        .and_then(|p| char_index(sql, p))
        .map(|i| i.to_string());
    info
}

/// A user error (bad parameter, unsupported protocol use) as an error response.
pub(crate) fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message.into(),
    )))
}

/// A Weir SQL error as a pgwire error.
pub(crate) fn sql_error(e: &SqlError, sql: &str) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e, sql)))
}

/// The 1-based character index of a line and column in `sql`.
fn char_index(sql: &str, at: Position) -> Option<usize> {
    let mut index = 0usize;
    for (n, line) in sql.split_inclusive('\n').enumerate() {
        if n as u64 + 1 == at.line {
            let column = usize::try_from(at.column).ok()?;
            return Some(index + column.min(line.chars().count() + 1));
        }
        index += line.chars().count();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_character_indexes_across_lines() {
        let sql = "SELECT a\nFROM bidz";
        let at = Position { line: 2, column: 6 };
        assert_eq!(char_index(sql, at), Some(15));
        assert_eq!(&sql[14..18], "bidz");
        assert_eq!(char_index(sql, Position { line: 3, column: 1 }), None);
    }
}
