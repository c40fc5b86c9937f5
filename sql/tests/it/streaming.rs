//! Persistent queries beyond what a `.slt` file says: counts from the engine's metrics, poison
//! rows dead-lettered with the rest going on, and a generated source resumed exactly once
//! after its session ends mid-run.

use std::path::Path;
use std::time::{Duration, Instant};

use weir_log::{Log, LogOptions, PartitionId};
use weir_sql::{Engine, Output, Session};

/// How long a test waits for a persistent query to get somewhere.
const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn open(dir: &Path) -> anyhow::Result<(Log, Session)> {
    let log = Log::open_with(dir, LogOptions::without_cleaner())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let engine = Engine {
        groups,
        txns,
        state_dir: dir.join("state"),
    };
    Ok((log.clone(), Session::open_with_engine(&log, engine)?))
}

pub(crate) fn single_i64(session: &mut Session, sql: &str) -> anyhow::Result<i64> {
    let outcomes = session.execute(sql)?;
    let Some(Output::Rows { batches, .. }) = outcomes.last().map(|o| &o.output) else {
        anyhow::bail!("no rows from {sql}");
    };
    let v = batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .map(|a| a.value(0))
        })
        .ok_or_else(|| anyhow::anyhow!("no value from {sql}"))?;
    Ok(v)
}

pub(crate) fn wait_for(
    what: &str,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !done()? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn a_generated_stream_into_a_blackhole_counts_every_row() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_log, mut session) = open(dir.path())?;
    session.execute(
        "CREATE STREAM gen (id BIGINT, price AS (id * 48271) % 100000 + 1) \
           WITH (connector = 'datagen', 'number-of-rows' = '50000', partitions = 2, \
                 'fields.id.kind' = 'sequence');
         CREATE SINK q1 AS SELECT id, price * 908 / 1000 AS euros FROM gen \
           WITH (connector = 'blackhole');",
    )?;
    wait_for("50,000 rows in", || {
        Ok(session
            .query_metrics("q1")
            .is_some_and(|m| m.records_in == 50_000))
    })?;
    let outcomes = session.execute("SHOW QUERIES")?;
    let Output::Rows { batches, .. } = &outcomes[0].output else {
        anyhow::bail!("SHOW QUERIES has no rows");
    };
    let shown = weir_sql::render_rows(batches)?;
    anyhow::ensure!(shown.contains("q1") && shown.contains("running"), "{shown}");
    anyhow::ensure!(
        shown.contains("blackhole") && shown.contains("50000"),
        "{shown}"
    );
    Ok(())
}

#[test]
fn a_row_whose_expression_fails_is_dead_lettered_and_the_others_go_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, mut session) = open(dir.path())?;
    session.execute(
        "CREATE STREAM readings (sensor BIGINT, total BIGINT, n BIGINT);
         CREATE STREAM means (sensor BIGINT, mean BIGINT);
         INSERT INTO means SELECT sensor, total / n FROM readings;
         INSERT INTO readings VALUES (1, 10, 2), (2, 10, 0), (3, 9, 3);",
    )?;
    // A record that is not JSON at all: poison too, with the decoder's reason.
    log.append(
        "readings",
        PartitionId(0),
        &[weir_log::Record::value(&b"{not json"[..])],
    )?;
    session.execute("INSERT INTO readings VALUES (4, 8, 4)")?;
    wait_for("three means", || {
        Ok(single_i64(&mut session, "SELECT COUNT(*) FROM means")? == 3)
    })?;
    let all = wait_for_dead_letters(&log, "insert_into_means", 2)?.join("\n");
    anyhow::ensure!(all.to_lowercase().contains("divide by zero"), "{all}");
    anyhow::ensure!(all.contains("does not decode"), "{all}");
    Ok(())
}

/// Waits for `n` dead letters of persistent query `query`; returns them as
/// [`dead_letters`] does.
pub(crate) fn wait_for_dead_letters(
    log: &Log,
    query: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let dlq = weir_engine::dead_letter_topic(&weir_sql::query_app(query));
    let mut reasons = Vec::new();
    wait_for(&format!("{n} dead letters"), || {
        reasons = dead_letters(log, &dlq)?;
        Ok(reasons.len() == n)
    })?;
    Ok(reasons)
}

/// The committed dead letters of a topic, each as its headers `k=v …`.
fn dead_letters(log: &Log, dlq: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    if log.partition_count(dlq).is_err() {
        return Ok(out);
    }
    log.for_each_record(
        dlq,
        PartitionId(0),
        weir_log::Offset(0),
        weir_log::Isolation::ReadCommitted,
        |r| {
            let text: Vec<String> = r
                .headers()
                .filter_map(|h| h.ok())
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(v.unwrap_or_default())
                    )
                })
                .collect();
            out.push(text.join(" "));
            Ok::<(), weir_log::LogError>(())
        },
    )?;
    Ok(out)
}

#[test]
fn a_generated_source_resumes_exactly_once_after_its_session_ends_mid_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let rows = 30_000;
    {
        let (_log, mut session) = open(dir.path())?;
        session.execute(&format!(
            "CREATE STREAM gen (id BIGINT) WITH (connector = 'datagen', \
               'number-of-rows' = '{rows}', 'rows-per-second' = '40000', partitions = 2, \
               'fields.id.kind' = 'sequence');
             CREATE STREAM copy (id BIGINT) WITH (partitions = 3);
             INSERT INTO copy SELECT id FROM gen;"
        ))?;
        wait_for("some rows copied", || {
            Ok(session
                .query_metrics("insert_into_copy")
                .is_some_and(|m| m.records_in > 2_000))
        })?;
        let copied = single_i64(&mut session, "SELECT COUNT(*) FROM copy")?;
        anyhow::ensure!(copied < rows, "the copy finished before the session ended");
    }
    let (_log, mut session) = open(dir.path())?;
    wait_for("every row copied", || {
        Ok(single_i64(&mut session, "SELECT COUNT(*) FROM copy")? >= rows)
    })?;
    let distinct = single_i64(&mut session, "SELECT COUNT(DISTINCT id) FROM copy")?;
    let total = single_i64(&mut session, "SELECT COUNT(*) FROM copy")?;
    anyhow::ensure!(
        distinct == rows && total == rows,
        "{total} rows, {distinct} distinct"
    );
    Ok(())
}

/// A query's rows as `a|b|…` text, and its notices.
pub(crate) fn text_rows(
    session: &mut Session,
    sql: &str,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let outcome = session.execute(sql)?.remove(0);
    let Output::Rows { batches, .. } = &outcome.output else {
        anyhow::bail!("no rows from {sql}");
    };
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| {
                    datafusion::arrow::util::display::array_value_to_string(c, r)
                        .unwrap_or_default()
                })
                .collect();
            rows.push(cells.join("|"));
        }
    }
    Ok((rows, outcome.notices))
}
