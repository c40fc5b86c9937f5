//! What `.slt` files cannot say: records written by other producers (bad ones reported with
//! their position, good ones kept) and partitions scanned in parallel.

use weir_log::{Log, LogOptions, PartitionId, Record};
use weir_sql::{Output, Session};

fn count(outcome: &weir_sql::Outcome) -> i64 {
    let Output::Rows { batches, .. } = &outcome.output else {
        return -1;
    };
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .map_or(-1, |a| a.value(0))
}

#[test]
fn bad_records_are_reported_with_their_position_and_good_ones_kept() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = Log::open_with(dir.path(), LogOptions::without_cleaner())?;
    let mut s = Session::open(&log)?;
    s.execute("CREATE STREAM ev (id BIGINT, name TEXT) WITH (partitions = 2)")?;
    for (p, v) in [
        (0, r#"{"id": 1, "name": "a"}"#),
        (0, "{not json"),
        (1, r#"{"id": 2}"#),
        (1, r#"{"id": "two"}"#),
    ] {
        log.append("ev", PartitionId(p), &[Record::value(v)])?;
    }
    let out = s.execute("SELECT COUNT(*) FROM ev")?;
    assert_eq!(count(&out[0]), 2);
    let notice = out[0].notices.join("\n");
    assert!(notice.contains("skipped 2 record(s)"), "{notice}");
    assert!(notice.contains("partition 0 offset 1"), "{notice}");
    assert!(notice.contains("partition 1 offset 1"), "{notice}");
    Ok(())
}

#[test]
fn a_batch_query_reads_every_partition_up_to_now() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = Log::open_with(dir.path(), LogOptions::without_cleaner())?;
    let mut s = Session::open(&log)?;
    s.execute("CREATE STREAM ev (id BIGINT) WITH (partitions = 3)")?;
    let n = 30_000;
    for p in 0..3u32 {
        let records: Vec<Record> = (0..n / 3)
            .map(|i| Record::value(format!("{{\"id\": {}}}", i * 3 + i64::from(p))))
            .collect();
        log.append("ev", PartitionId(p), &records)?;
    }
    let out = s.execute("SELECT COUNT(*) FROM ev; SELECT SUM(id) FROM ev")?;
    assert_eq!(count(&out[0]), n);
    assert_eq!(count(&out[1]), n * (n - 1) / 2);
    assert!(out[0].notices.is_empty(), "{:?}", out[0].notices);
    Ok(())
}
