//! The SQL front end's errors, sorted by whose fault they are. A user's mistake carries where
//! it is in the statement (1-based line and column, as an editor shows them) and, where one
//! exists, a hint ("did you mean `price`?"); the environment's failures carry what was being
//! done. No error here is a panic, and none loses a record: what cannot be decoded is reported
//! with its topic, partition and offset.

use std::fmt;

use weir_log::LogError;

/// A position in a statement: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Where an error is, when known: ` at line L, column C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct At(pub Option<Position>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, " at {p}"),
            None => Ok(()),
        }
    }
}

/// A hint appended to a message: `; did you mean …?`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hint(pub Option<String>);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(h) => write!(f, "; {h}"),
            None => Ok(()),
        }
    }
}

/// Errors of `weir-sql`.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    // ----- the user's statement -----
    /// The statement does not parse.
    #[error("syntax error{at}: {message}")]
    Syntax {
        /// What the parser expected and found.
        message: String,
        /// Where.
        at: At,
    },
    /// The statement parses but cannot be planned (unknown column, type mismatch, …).
    #[error("{message}{at}{hint}")]
    Plan {
        /// What is wrong.
        message: String,
        /// Where, when known.
        at: At,
        /// A suggestion, when there is one.
        hint: Hint,
    },
    /// A stream, table or view that the catalog does not have.
    #[error("{kind} `{name}` does not exist{at}{hint}")]
    UnknownRelation {
        /// What was looked for (`stream`, `table`, `relation`).
        kind: &'static str,
        /// Its name.
        name: String,
        /// Where it is named.
        at: At,
        /// The closest existing name, if any.
        hint: Hint,
    },
    /// A name already taken in the catalog.
    #[error("`{name}` already exists (a {kind}){at}")]
    Exists {
        /// The name.
        name: String,
        /// What holds it.
        kind: &'static str,
        /// Where it is named.
        at: At,
    },
    /// A construct Weir does not run (or not yet); named so the user knows what to change.
    #[error("not supported{at}: {construct}")]
    Unsupported {
        /// The construct and, where useful, what to use instead.
        construct: String,
        /// Where.
        at: At,
    },
    /// A `WITH (…)` option that is unknown or has a bad value.
    #[error("option `{key}`{at}: {reason}")]
    BadOption {
        /// The option.
        key: String,
        /// What is wrong, and what is allowed.
        reason: String,
        /// Where.
        at: At,
    },
    /// A statement longer than the limit.
    #[error("statement of {len} bytes is over the {max}-byte limit")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },

    // ----- the data -----
    /// A value that does not fit the column it is written to (INSERT).
    #[error("value for column `{column}` of `{relation}`: {reason}")]
    BadValue {
        /// The relation written.
        relation: String,
        /// The column.
        column: String,
        /// What is wrong.
        reason: String,
    },

    // ----- the environment -----
    /// The log failed (or refused, e.g. a topic that cannot be created).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The catalog topic holds a record that does not decode.
    #[error("catalog record for `{name}` does not decode: {reason}")]
    CorruptCatalog {
        /// The key of the record.
        name: String,
        /// Why.
        reason: String,
    },
    /// Query execution failed for a reason that is not the statement's (I/O, runtime).
    #[error("query failed: {0}")]
    Execution(String),
}

/// Result alias.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

impl SqlError {
    /// Where in the statement the error is, when known.
    pub fn position(&self) -> Option<Position> {
        match self {
            SqlError::Syntax { at, .. }
            | SqlError::Plan { at, .. }
            | SqlError::UnknownRelation { at, .. }
            | SqlError::Exists { at, .. }
            | SqlError::Unsupported { at, .. }
            | SqlError::BadOption { at, .. } => at.0,
            _ => None,
        }
    }

    /// A planning error at a position, without a hint.
    pub(crate) fn plan(message: impl Into<String>, at: Option<Position>) -> SqlError {
        SqlError::Plan {
            message: message.into(),
            at: At(at),
            hint: Hint(None),
        }
    }

    /// An unsupported construct.
    pub(crate) fn unsupported(construct: impl Into<String>, at: Option<Position>) -> SqlError {
        SqlError::Unsupported {
            construct: construct.into(),
            at: At(at),
        }
    }

    /// A bad `WITH` option.
    pub(crate) fn option(key: &str, reason: impl Into<String>) -> SqlError {
        SqlError::BadOption {
            key: key.to_string(),
            reason: reason.into(),
            at: At(None),
        }
    }

    /// Whether the statement (not the system) is at fault: the session goes on.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            SqlError::Log(_) | SqlError::CorruptCatalog { .. } | SqlError::Execution(_)
        )
    }
}

/// A DataFusion error as ours: a planning mistake keeps its position (DataFusion's
/// diagnostic span) and turns "possible column t.price" notes into a "did you mean" hint;
/// a syntax error keeps sqlparser's line and column; anything else is an execution failure.
pub(crate) fn from_datafusion(e: datafusion::error::DataFusionError) -> SqlError {
    use datafusion::error::DataFusionError as D;
    if let Some(d) = e.diagnostic() {
        let at = d.span.and_then(|s| {
            (s.start.line > 0).then_some(Position {
                line: s.start.line,
                column: s.start.column,
            })
        });
        let suggestion = d.notes.iter().find_map(|n| {
            n.message
                .strip_prefix("possible column ")
                .map(|c| c.rsplit('.').next().unwrap_or(c).to_string())
        });
        return SqlError::Plan {
            message: d.message.clone(),
            at: At(at),
            hint: Hint(suggestion.map(|c| format!("did you mean `{c}`?"))),
        };
    }
    match e.find_root() {
        D::SQL(pe, _) => crate::parser::syntax((**pe).clone()),
        D::Plan(m) | D::NotImplemented(m) => SqlError::plan(m.clone(), None),
        D::SchemaError(..) => SqlError::plan(e.find_root().to_string(), None),
        _ => SqlError::Execution(e.to_string()),
    }
}

/// The name in `candidates` closest to `name`, when it is close enough to be a likely typo
/// (edit distance at most a third of the name's length, and at least 1).
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let budget = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance over characters, counting a swap of two neighbours as one edit (optimal
/// string alignment), the commonest typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_column() {
        let cols = ["auction", "price", "bidder"];
        assert_eq!(closest("prise", cols), Some("price"));
        assert_eq!(closest("auctoin", cols), Some("auction"));
        assert_eq!(closest("bdis", ["bids"]), Some("bids"));
        assert_eq!(closest("zzz", cols), None);
    }
}
