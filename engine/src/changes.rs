//! Change events in Debezium's JSON envelope, the lingua franca of CDC: what a source
//! database's row did (`op`: `c` create, `r` read by a snapshot, `u` update, `d` delete, `t`
//! truncate), the row `before` and `after`, and where in the source's log it happened
//! (`source`: connector, db, schema, table, `lsn` or binlog `file`/`pos`/`row`, `ts_ms`,
//! `snapshot`). Both shapes parse: the bare envelope and Kafka Connect's
//! `{"schema": …, "payload": envelope}`. An empty value is the tombstone Debezium writes after
//! a delete (for log compaction); it parses as no event.
//!
//! [`SourcePosition`] orders events of one source so a consumer can tell a replay (an event
//! at or before the position it already applied for a key) from news.
//!
//! Invariant: a value that is not an envelope is an error naming what is wrong — never an
//! event with guessed fields.

use serde_json::{Map, Value};

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeOp {
    /// `c`: inserted.
    Create,
    /// `r`: read by a snapshot (an insert for whoever applies it).
    Read,
    /// `u`: updated.
    Update,
    /// `d`: deleted (`before` holds the old row, or at least its key).
    Delete,
    /// `t`: the table was truncated.
    Truncate,
}

impl ChangeOp {
    /// The envelope's code.
    pub fn code(self) -> &'static str {
        match self {
            ChangeOp::Create => "c",
            ChangeOp::Read => "r",
            ChangeOp::Update => "u",
            ChangeOp::Delete => "d",
            ChangeOp::Truncate => "t",
        }
    }

    fn parse(code: &str) -> Option<ChangeOp> {
        Some(match code {
            "c" => ChangeOp::Create,
            "r" => ChangeOp::Read,
            "u" => ChangeOp::Update,
            "d" => ChangeOp::Delete,
            "t" => ChangeOp::Truncate,
            _ => return None,
        })
    }
}

/// A position in a source database's log, ordered: PostgreSQL's LSN, or MySQL's binlog file
/// number, position and row; positions of different sources do not compare meaningfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePosition(pub [u64; 3]);

impl SourcePosition {
    /// PostgreSQL's log sequence number.
    pub fn lsn(lsn: u64) -> SourcePosition {
        SourcePosition([lsn, 0, 0])
    }

    /// Big-endian bytes, which sort as positions do (for stores).
    pub fn to_bytes(self) -> [u8; 24] {
        let mut out = [0u8; 24];
        for (i, part) in self.0.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&part.to_be_bytes());
        }
        out
    }

    /// The inverse of [`SourcePosition::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Option<SourcePosition> {
        if b.len() != 24 {
            return None;
        }
        let mut parts = [0u64; 3];
        for (i, part) in parts.iter_mut().enumerate() {
            *part = u64::from_be_bytes(b[i * 8..i * 8 + 8].try_into().ok()?);
        }
        Some(SourcePosition(parts))
    }
}

/// A change event.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// What happened.
    pub op: ChangeOp,
    /// The row before (updates and deletes, when the source logs it).
    pub before: Option<Map<String, Value>>,
    /// The row after (creates, reads and updates).
    pub after: Option<Map<String, Value>>,
    /// Where in the source's log.
    pub position: Option<SourcePosition>,
    /// When the source applied it (epoch ms), else when the connector saw it.
    pub ts_ms: Option<i64>,
    /// Whether a snapshot read it.
    pub snapshot: bool,
    /// The source table (`schema.table`, or `table`), when `source` names it.
    pub table: Option<String>,
}

/// Why a value is not a change event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    Json(String),
    /// JSON, but not an envelope.
    #[error("not a Debezium envelope: {0}")]
    Envelope(String),
}

impl ChangeEvent {
    /// Parses a record value; `Ok(None)` for a tombstone (an empty value).
    pub fn parse(value: &[u8]) -> Result<Option<ChangeEvent>, ChangeError> {
        if value.is_empty() {
            return Ok(None);
        }
        let root: Value =
            serde_json::from_slice(value).map_err(|e| ChangeError::Json(e.to_string()))?;
        let Value::Object(mut root) = root else {
            return Err(envelope("the value is not a JSON object"));
        };
        // Kafka Connect's JSON converter with schemas: the envelope is the payload.
        if root.contains_key("schema") && root.contains_key("payload") {
            root = match root.remove("payload") {
                Some(Value::Object(p)) => p,
                Some(Value::Null) => return Ok(None),
                _ => return Err(envelope("`payload` is not an object")),
            };
        }
        let op = match root.get("op") {
            Some(Value::String(code)) => ChangeOp::parse(code)
                .ok_or_else(|| envelope(&format!("unknown op `{code}` (c, r, u, d or t)")))?,
            Some(_) => return Err(envelope("`op` is not a string")),
            None => return Err(envelope("no `op`")),
        };
        let before = row(&mut root, "before")?;
        let after = row(&mut root, "after")?;
        match op {
            ChangeOp::Create | ChangeOp::Read | ChangeOp::Update if after.is_none() => {
                return Err(envelope(&format!("op `{}` without `after`", op.code())))
            }
            ChangeOp::Delete if before.is_none() => {
                return Err(envelope("op `d` without `before` (the deleted row's key)"))
            }
            _ => {}
        }
        let source = match root.get("source") {
            Some(Value::Object(s)) => Some(s),
            None | Some(Value::Null) => None,
            Some(_) => return Err(envelope("`source` is not an object")),
        };
        Ok(Some(ChangeEvent {
            op,
            before,
            after,
            position: source.and_then(position),
            ts_ms: source
                .and_then(|s| s.get("ts_ms"))
                .or_else(|| root.get("ts_ms"))
                .and_then(Value::as_i64),
            snapshot: source.is_some_and(|s| match s.get("snapshot") {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => s != "false",
                _ => false,
            }),
            table: source.and_then(table_name),
        }))
    }

    /// The row whose key identifies what changed: `after`, or for a delete `before`.
    pub fn keyed_row(&self) -> Option<&Map<String, Value>> {
        self.after.as_ref().or(self.before.as_ref())
    }
}

fn envelope(why: &str) -> ChangeError {
    ChangeError::Envelope(why.to_string())
}

/// `before` or `after`: an object, or absent/null.
fn row(
    root: &mut Map<String, Value>,
    name: &str,
) -> Result<Option<Map<String, Value>>, ChangeError> {
    match root.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(r)) => Ok(Some(r)),
        Some(_) => Err(envelope(&format!("`{name}` is not an object"))),
    }
}

/// PostgreSQL's `lsn`, or MySQL's binlog `file` (its number), `pos` and `row`.
fn position(source: &Map<String, Value>) -> Option<SourcePosition> {
    if let Some(lsn) = source.get("lsn").and_then(Value::as_u64) {
        return Some(SourcePosition::lsn(lsn));
    }
    let file = source.get("file").and_then(Value::as_str)?;
    let digits: String = file
        .rsplit('.')
        .next()?
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let file = digits.parse::<u64>().ok()?;
    let pos = source.get("pos").and_then(Value::as_u64)?;
    let row = source.get("row").and_then(Value::as_u64).unwrap_or(0);
    Some(SourcePosition([file, pos, row]))
}

fn table_name(source: &Map<String, Value>) -> Option<String> {
    let table = source.get("table").and_then(Value::as_str)?;
    Some(match source.get("schema").and_then(Value::as_str) {
        Some(schema) => format!("{schema}.{table}"),
        None => table.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<ChangeEvent>, ChangeError> {
        ChangeEvent::parse(s.as_bytes())
    }

    #[test]
    fn envelopes_parse_bare_and_with_schema() -> Result<(), ChangeError> {
        let bare = r#"{"before":null,"after":{"id":1,"name":"a"},"op":"c","ts_ms":5,
            "source":{"connector":"postgresql","db":"shop","schema":"public","table":"customers",
                      "lsn":24023128,"snapshot":"false","ts_ms":4}}"#;
        let e = parse(bare)?.ok_or_else(|| envelope("none"))?;
        assert_eq!(e.op, ChangeOp::Create);
        assert_eq!(
            e.after.as_ref().and_then(|a| a.get("name")),
            Some(&Value::from("a"))
        );
        assert_eq!(e.position, Some(SourcePosition::lsn(24023128)));
        assert_eq!((e.ts_ms, e.snapshot), (Some(4), false));
        assert_eq!(e.table.as_deref(), Some("public.customers"));
        let wrapped = format!(r#"{{"schema":{{"type":"struct"}},"payload":{bare}}}"#);
        assert_eq!(parse(&wrapped)?, Some(e));
        // MySQL's binlog position orders by file, then position, then row.
        let m = parse(
            r#"{"op":"u","before":{"id":1},"after":{"id":1},
                "source":{"file":"mysql-bin.000003","pos":154,"row":1,"snapshot":true}}"#,
        )?
        .ok_or_else(|| envelope("none"))?;
        assert_eq!(m.position, Some(SourcePosition([3, 154, 1])));
        assert!(m.snapshot);
        assert_eq!(parse("")?, None);
        Ok(())
    }

    #[test]
    fn what_is_not_an_envelope_says_why() {
        let why = |s: &str| parse(s).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(why("{nope").starts_with("not JSON"));
        assert!(why("[1]").contains("not a JSON object"));
        assert!(why(r#"{"after":{}}"#).contains("no `op`"));
        assert!(why(r#"{"op":"x","after":{}}"#).contains("unknown op `x`"));
        assert!(why(r#"{"op":"c","after":null}"#).contains("without `after`"));
        assert!(why(r#"{"op":"d","before":null}"#).contains("without `before`"));
        assert!(why(r#"{"op":"u","after":3}"#).contains("`after` is not an object"));
    }

    #[test]
    fn positions_sort_as_their_bytes() {
        let a = SourcePosition([1, 2, 3]);
        let b = SourcePosition([1, 3, 0]);
        assert!(a < b && a.to_bytes() < b.to_bytes());
        assert_eq!(SourcePosition::from_bytes(&a.to_bytes()), Some(a));
    }
}
