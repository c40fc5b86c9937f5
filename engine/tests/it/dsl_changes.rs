//! The DSL over change data: `table_from_changes` reads Debezium events (schema-wrapped keys,
//! updates, deletes, tombstones, a replay, a malformed event), `group_by` regroups the rows
//! and its aggregate takes an update's old value back out, and `to_table` writes change
//! rows; the result equals the totals of the final rows, across two runs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_engine::{DebeziumJson, Pipeline, RunOptions};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderKey {
    id: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: i64,
    customer: String,
    amount: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Summary {
    orders: i64,
    total: i64,
}

fn event(op: &str, before: Option<&Order>, after: Option<&Order>, lsn: u64) -> String {
    serde_json::json!({"op": op, "before": before, "after": after,
        "source": {"connector": "postgresql", "lsn": lsn}})
    .to_string()
}

#[test]
fn a_change_table_regrouped_retracts_old_values_and_writes_change_rows() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = crate::common::open_log(dir.path());
    log.create_topic("dbserver.public.orders", 2, Default::default())?;
    log.create_topic("summaries", 2, Default::default())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let append = |id: i64, value: Option<String>, wrapped: bool| -> anyhow::Result<()> {
        let key = match wrapped {
            true => serde_json::json!({"schema": {"type": "struct"}, "payload": {"id": id}}),
            false => serde_json::json!({ "id": id }),
        };
        // Partitioned by the key's id, as a connector might: the table needs no more.
        let p = weir_log::PartitionId((id % 2) as u32);
        let r = weir_log::Record {
            key: Some(key.to_string().into()),
            value: value.map(Into::into),
            ..Default::default()
        };
        log.append("dbserver.public.orders", p, &[r])?;
        Ok(())
    };
    let run = || -> anyhow::Result<()> {
        let p = Pipeline::builder("summaries");
        let orders =
            p.table_from_changes::<OrderKey, Order>("dbserver.public.orders", DebeziumJson);
        orders
            .group_by(|_, o| o.customer.clone())
            .aggregate(
                || Summary {
                    orders: 0,
                    total: 0,
                },
                |s, o| Summary {
                    orders: s.orders + 1,
                    total: s.total + o.amount,
                },
                |s, o| Summary {
                    orders: s.orders - 1,
                    total: s.total - o.amount,
                },
            )
            .to_table("summaries");
        p.build()?
            .run(
                &log,
                &groups,
                &txns,
                RunOptions::new(dir.path().join("state")),
            )?
            .stop_when_idle(Duration::from_millis(300), Duration::from_secs(30))?;
        Ok(())
    };
    let o = |id, customer: &str, amount| Order {
        id,
        customer: customer.into(),
        amount,
    };
    append(1, Some(event("c", None, Some(&o(1, "ann", 10)), 10)), true)?;
    append(2, Some(event("c", None, Some(&o(2, "ann", 5)), 20)), false)?;
    append(3, Some(event("c", None, Some(&o(3, "bob", 7)), 30)), false)?;
    run()?;
    // Order 2 moves to bob with a new amount; order 1 is deleted (and tombstoned); a replay
    // of order 3's create and a malformed event change nothing.
    append(
        2,
        Some(event("u", Some(&o(2, "ann", 5)), Some(&o(2, "bob", 6)), 40)),
        false,
    )?;
    append(1, Some(event("d", Some(&o(1, "ann", 10)), None, 50)), true)?;
    append(1, None, true)?;
    append(3, Some(event("c", None, Some(&o(3, "bob", 99)), 5)), false)?;
    append(3, Some("{not json".into()), false)?;
    run()?;
    let rows = crate::common::committed_by_key(&log, "summaries", |k, v| {
        let row: serde_json::Value = serde_json::from_slice(v).expect("json");
        (String::from_utf8_lossy(k).into_owned(), row)
    });
    let last: BTreeMap<&str, &serde_json::Value> = rows
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.last()?)))
        .collect();
    assert_eq!(
        last[r#""bob""#],
        &serde_json::json!({"op": "update_after", "orders": 2, "total": 13})
    );
    assert_eq!(
        last[r#""ann""#],
        &serde_json::json!({"op": "update_after", "orders": 0, "total": 0})
    );
    // Every change of ann retracted the row written before it.
    let ann_ops: Vec<&str> = rows[r#""ann""#]
        .iter()
        .filter_map(|r| r["op"].as_str())
        .collect();
    assert_eq!(ann_ops[0], "insert");
    assert!(
        ann_ops[1..]
            .chunks(2)
            .all(|c| c == ["update_before", "update_after"]),
        "{ann_ops:?}"
    );
    Ok(())
}
