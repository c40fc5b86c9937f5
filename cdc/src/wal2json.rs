//! wal2json's output (format version 2, one row per change, with transaction boundaries)
//! as [`Transaction`]s: `B` begins one, `I`/`U`/`D`/`T` are its changes, `C` ends it at the
//! LSN the slot may be advanced to once its changes are durable elsewhere.

use serde_json::{Map, Value};

use crate::error::{CdcError, Result};
use crate::lsn::Lsn;

/// The options every peek passes to wal2json (with `add-tables` for the publication's).
pub(crate) const WAL2JSON_OPTIONS: &[(&str, &str)] = &[
    ("format-version", "2"),
    ("include-xids", "1"),
    ("include-lsn", "1"),
    ("include-pk", "1"),
    ("include-transaction", "1"),
];

/// What a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    /// `I`.
    Insert,
    /// `U`.
    Update,
    /// `D`.
    Delete,
    /// `T`.
    Truncate,
}

/// One row's change.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// What happened.
    pub op: RowOp,
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// The change's own LSN.
    pub lsn: Lsn,
    /// The new row (inserts, updates).
    pub columns: Map<String, Value>,
    /// The old row's replica identity (updates, deletes): its primary key by default.
    pub identity: Map<String, Value>,
    /// The primary key's columns, in order.
    pub primary_key: Vec<String>,
}

/// A committed transaction's changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// Its id (32 bits, as logical decoding reports it).
    pub xid: u32,
    /// The LSN just past its commit: the slot may advance here.
    pub end: Lsn,
    /// Its changes, in order.
    pub changes: Vec<RowChange>,
}

/// Groups peeked rows `(lsn, xid, data)` into whole transactions; rows of a transaction whose
/// commit is not among them are left out (the next peek returns them again).
pub fn transactions(rows: &[(String, String, String)]) -> Result<Vec<Transaction>> {
    let mut out = Vec::new();
    let mut open: Option<Transaction> = None;
    for (lsn, xid, data) in rows {
        let bad = |why: &str| CdcError::Source(format!("wal2json at {lsn}: {why}: {data}"));
        let v: Value = serde_json::from_str(data).map_err(|e| bad(&e.to_string()))?;
        let action = v["action"].as_str().ok_or_else(|| bad("no action"))?;
        match action {
            "B" => {
                let xid = xid.parse::<u32>().map_err(|_| bad("bad xid"))?;
                open = Some(Transaction {
                    xid,
                    end: Lsn::default(),
                    changes: Vec::new(),
                });
            }
            "C" => {
                let mut t = open.take().ok_or_else(|| bad("a commit without a begin"))?;
                t.end = Lsn::parse(lsn).ok_or_else(|| bad("bad lsn"))?;
                out.push(t);
            }
            "I" | "U" | "D" | "T" => {
                let t = open
                    .as_mut()
                    .ok_or_else(|| bad("a change outside a transaction"))?;
                t.changes.push(row_change(action, &v).map_err(|e| bad(&e))?);
            }
            // Messages (`M`) and anything newer carry no row.
            _ => {}
        }
    }
    Ok(out)
}

fn row_change(action: &str, v: &Value) -> std::result::Result<RowChange, String> {
    let op = match action {
        "I" => RowOp::Insert,
        "U" => RowOp::Update,
        "D" => RowOp::Delete,
        _ => RowOp::Truncate,
    };
    let text = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no {k}"))
    };
    let lsn = match v["lsn"].as_str() {
        Some(l) => Lsn::parse(l).ok_or("bad change lsn")?,
        None => Lsn::default(),
    };
    Ok(RowChange {
        op,
        schema: text("schema")?,
        table: text("table")?,
        lsn,
        columns: named_values(&v["columns"]),
        identity: named_values(&v["identity"]),
        primary_key: v["pk"]
            .as_array()
            .map(|pk| {
                pk.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// `[{"name": …, "value": …}, …]` as an object.
fn named_values(v: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for c in v.as_array().into_iter().flatten() {
        if let Some(name) = c["name"].as_str() {
            out.insert(name.to_string(), c["value"].clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(lsn: &str, xid: &str, data: &str) -> (String, String, String) {
        (lsn.into(), xid.into(), data.into())
    }

    #[test]
    fn rows_group_into_whole_transactions() -> Result<()> {
        let rows = [
            row("0/10", "731", r#"{"action":"B","xid":731}"#),
            row(
                "0/10",
                "731",
                r#"{"action":"I","xid":731,"lsn":"0/1538D48","schema":"public","table":"t","columns":[{"name":"id","type":"integer","value":1},{"name":"v","type":"text","value":"a"}],"pk":[{"name":"id","type":"integer"}]}"#,
            ),
            row("0/1538E68", "731", r#"{"action":"C","xid":731}"#),
            row("0/1538E68", "732", r#"{"action":"B","xid":732}"#),
            row(
                "0/1538E68",
                "732",
                r#"{"action":"D","xid":732,"lsn":"0/1538EF8","schema":"public","table":"t","identity":[{"name":"id","type":"integer","value":1}],"pk":[{"name":"id","type":"integer"}]}"#,
            ),
        ];
        let t = transactions(&rows)?;
        assert_eq!(t.len(), 1, "the open transaction waits for its commit");
        assert_eq!((t[0].xid, t[0].end), (731, Lsn(0x1538E68)));
        let c = &t[0].changes[0];
        assert_eq!(
            (c.op, c.table.as_str(), c.lsn),
            (RowOp::Insert, "t", Lsn(0x1538D48))
        );
        assert_eq!(c.columns["v"], Value::from("a"));
        assert_eq!(c.primary_key, ["id"]);
        assert!(transactions(&[row("0/1", "1", "{nope")]).is_err());
        Ok(())
    }
}
