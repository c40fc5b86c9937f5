//! The built-in oracle: a windowed aggregate run as a persistent query over a finite input
//! (random values, out of order within the watermark's bound, spread over partitions) emits,
//! once every window has closed, exactly the rows the same query computes in batch mode over
//! the whole input; likewise an interval join of two streams (inner and LEFT) and DataFusion's
//! batch join. Seeded; the seed is printed (`SEED=…` replays one).

use std::time::{Duration, Instant};

use weir_log::{PartitionId, Record, Timestamp};
use weir_sql::{Output, Session};

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    match std::env::var("SEED") {
        Ok(s) => s.parse().unwrap_or(1),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

fn rendered(session: &mut Session, sql: &str) -> anyhow::Result<Vec<String>> {
    let outcomes = session.execute(sql)?;
    let Some(Output::Rows { batches, .. }) = outcomes.last().map(|o| &o.output) else {
        anyhow::bail!("no rows from {sql}");
    };
    let options = datafusion::arrow::util::display::FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| {
                datafusion::arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..b.num_rows() {
            let cells: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
            rows.push(cells.join(" "));
        }
    }
    rows.sort();
    Ok(rows)
}

/// Writes `events` records to `ev` (key 0..5, a value or NULL, one every 50 ms of event
/// time, out of order by less than the watermark's 3 s) over 2 partitions, then a far-future
/// record per partition that closes every window.
fn write_input(log: &weir_log::Log, rng: &mut Rng, events: u64) -> anyhow::Result<()> {
    write_input_to(log, "ev", rng, events, 50)
}

/// As [`write_input`], to `topic`, one record every `spacing_ms`.
fn write_input_to(
    log: &weir_log::Log,
    topic: &str,
    rng: &mut Rng,
    events: u64,
    spacing_ms: i64,
) -> anyhow::Result<()> {
    let base = 1_767_225_600_000i64;
    let mut records: Vec<(u32, i64, String)> = (0..events)
        .map(|i| {
            let ts = base + i as i64 * spacing_ms + rng.below(2500) as i64;
            let v = match rng.below(10) {
                0 => "null".to_string(),
                _ => (rng.below(201) as i64 - 100).to_string(),
            };
            let k = rng.below(5);
            (
                rng.below(2) as u32,
                ts,
                format!(r#"{{"k":{k},"v":{v},"ts":{ts}}}"#),
            )
        })
        .collect();
    // Neighbours swap places: arrival order differs from event-time order.
    for i in 1..records.len() {
        if rng.below(3) == 0 {
            records.swap(i - 1, i);
        }
    }
    for (p, ts, json) in records {
        log.append(
            topic,
            PartitionId(p),
            &[Record::value(json).at(Timestamp(ts))],
        )?;
    }
    for p in 0..2 {
        let far = base + 100_000_000;
        let json = format!(r#"{{"k":-1,"v":0,"ts":{far}}}"#);
        log.append(
            topic,
            PartitionId(p),
            &[Record::value(json).at(Timestamp(far))],
        )?;
    }
    Ok(())
}

fn check(window: &str, events: u64) -> anyhow::Result<()> {
    let seed = seed();
    eprintln!("oracle {window}: SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir()?;
    let (log, mut session) = crate::streaming::open(dir.path())?;
    session.execute(
        "CREATE STREAM ev (k BIGINT, v BIGINT, ts TIMESTAMP,
                           WATERMARK FOR ts AS ts - INTERVAL '3' SECOND) WITH (partitions = 2)",
    )?;
    write_input(&log, &mut rng, events)?;
    let select = format!(
        "SELECT k, window_start, window_end, COUNT(*) AS n, COUNT(v) AS nv, SUM(v) AS s,
                MIN(v) AS lo, MAX(v) AS hi, AVG(v) AS mean, COUNT(DISTINCT v) AS d
         FROM {window} GROUP BY k, window_start, window_end"
    );
    session.execute(&format!(
        "CREATE SINK agg AS {select} EMIT ON WINDOW CLOSE WITH (topic = 'out');
         CREATE STREAM out (k BIGINT, window_start TIMESTAMP, window_end TIMESTAMP, n BIGINT,
                            nv BIGINT, s BIGINT, lo BIGINT, hi BIGINT, mean DOUBLE, d BIGINT)
           WITH (topic = 'out');"
    ))?;
    let expected = rendered(
        &mut session,
        &format!("SELECT * FROM ({select}) WHERE k >= 0"),
    )?;
    anyhow::ensure!(expected.len() > 50, "too few windows: {}", expected.len());
    converges(&mut session, seed, "out", &expected)
}

#[test]
fn tumbling_windows_emitted_on_close_equal_the_batch_query() -> anyhow::Result<()> {
    check("TUMBLE(ev, ts, INTERVAL '10' SECOND)", 3000)
}

#[test]
fn hopping_windows_emitted_on_close_equal_the_batch_query() -> anyhow::Result<()> {
    check(
        "HOP(ev, ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND)",
        2000,
    )
}

#[test]
fn the_changes_of_an_updating_aggregate_end_at_the_batch_result() -> anyhow::Result<()> {
    let seed = seed();
    eprintln!("oracle updating GROUP BY: SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir()?;
    let (log, mut session) = crate::streaming::open(dir.path())?;
    session.execute(
        "CREATE STREAM ev (k BIGINT, v BIGINT, ts TIMESTAMP,
                           WATERMARK FOR ts AS ts - INTERVAL '3' SECOND) WITH (partitions = 2)",
    )?;
    write_input(&log, &mut rng, 3000)?;
    let select = "SELECT k, COUNT(*) AS n, COUNT(v) AS nv, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi,
                         AVG(v) AS mean, COUNT(DISTINCT v) AS d
                  FROM ev GROUP BY k";
    session.execute(&format!(
        "CREATE SINK agg AS {select} WITH (topic = 'out', partitions = 3);
         CREATE STREAM out (k BIGINT, n BIGINT, nv BIGINT, s BIGINT, lo BIGINT, hi BIGINT,
                            mean DOUBLE, d BIGINT, op TEXT) WITH (topic = 'out');"
    ))?;
    let expected = rendered(
        &mut session,
        &format!("SELECT * FROM ({select}) WHERE k >= 0"),
    )?;
    // The state a consumer ends with: per key, its last insert or update_after (keys are
    // co-partitioned in the output, so offsets order each key's changes).
    let last = "SELECT o.k, o.n, o.nv, o.s, o.lo, o.hi, o.mean, o.d FROM out o
                JOIN (SELECT k, MAX(_offset) AS at FROM out WHERE op <> 'update_before' GROUP BY k) l
                  ON o.k = l.k AND o._offset = l.at
                WHERE o.k >= 0";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = rendered(&mut session, last)?;
        if got == expected {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "SEED={seed}: last changes {got:?}, batch {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Retractions: the changes sum to the result.
    let net = rendered(
        &mut session,
        "SELECT k, SUM(CASE WHEN op = 'update_before' THEN -n ELSE n END) FROM out
         WHERE k >= 0 GROUP BY k",
    )?;
    let counts = rendered(
        &mut session,
        "SELECT k, COUNT(*) FROM ev WHERE k >= 0 GROUP BY k",
    )?;
    anyhow::ensure!(net == counts, "SEED={seed}: net {net:?} vs {counts:?}");
    Ok(())
}

#[test]
fn the_last_changes_of_windows_that_emit_changes_equal_the_batch_query() -> anyhow::Result<()> {
    let seed = seed();
    eprintln!("oracle windowed changes: SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir()?;
    let (log, mut session) = crate::streaming::open(dir.path())?;
    session.execute(
        "CREATE STREAM ev (k BIGINT, v BIGINT, ts TIMESTAMP,
                           WATERMARK FOR ts AS ts - INTERVAL '3' SECOND) WITH (partitions = 2)",
    )?;
    write_input(&log, &mut rng, 3000)?;
    let select = "SELECT k, window_start, COUNT(*) AS n, SUM(v) AS s, MAX(v) AS hi
                  FROM HOP(ev, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)
                  GROUP BY k, window_start";
    session.execute(&format!(
        "CREATE SINK agg AS {select} WITH (topic = 'out', partitions = 2);
         CREATE STREAM out (k BIGINT, window_start TIMESTAMP, n BIGINT, s BIGINT, hi BIGINT,
                            op TEXT) WITH (topic = 'out');
         CREATE MATERIALIZED VIEW v AS {select};"
    ))?;
    let expected = rendered(
        &mut session,
        &format!("SELECT * FROM ({select}) WHERE k >= 0"),
    )?;
    let last = "SELECT o.k, o.window_start, o.n, o.s, o.hi FROM out o
                JOIN (SELECT k, window_start, MAX(_offset) AS at FROM out
                      WHERE op <> 'update_before' GROUP BY k, window_start) l
                  ON o.k = l.k AND o.window_start = l.window_start AND o._offset = l.at
                WHERE o.k >= 0";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = rendered(&mut session, last)?;
        let view = rendered(&mut session, "SELECT * FROM v WHERE k >= 0")?;
        if got == expected && view == expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "SEED={seed}: {} last changes, {} view rows, {} batch rows",
            got.len(),
            view.len(),
            expected.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Streamed rows of `table` until they equal `expected` (or a minute passes, or too many come).
fn converges(
    session: &mut Session,
    seed: u64,
    table: &str,
    expected: &[String],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = rendered(session, &format!("SELECT * FROM {table} WHERE k >= 0"))?;
        if got == expected {
            return Ok(());
        }
        if Instant::now() > deadline || got.len() > expected.len() {
            let missing: Vec<&String> = expected
                .iter()
                .filter(|r| !got.contains(r))
                .take(5)
                .collect();
            let extra: Vec<&String> = got
                .iter()
                .filter(|r| !expected.contains(r))
                .take(5)
                .collect();
            anyhow::bail!(
                "SEED={seed} {table}: {} streamed rows, {} batch rows; missing {missing:?}; extra {extra:?}",
                got.len(),
                expected.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn interval_joins_of_two_streams_equal_the_batch_join() -> anyhow::Result<()> {
    let seed = seed();
    eprintln!("oracle interval join: SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir()?;
    let (log, mut session) = crate::streaming::open(dir.path())?;
    for s in ["ev", "ev2"] {
        session.execute(&format!(
            "CREATE STREAM {s} (k BIGINT, v BIGINT, ts TIMESTAMP,
                                WATERMARK FOR ts AS ts - INTERVAL '3' SECOND) WITH (partitions = 2)"
        ))?;
    }
    // The right side is sparser: many left rows meet nothing (the LEFT join's NULL rows).
    write_input_to(&log, "ev", &mut rng, 600, 50)?;
    write_input_to(&log, "ev2", &mut rng, 60, 500)?;
    let on = "a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL '1' SECOND AND a.ts + INTERVAL '2' SECOND";
    let inner = format!(
        "SELECT a.k, a.v AS av, a.ts AS at, b.v AS bv, b.ts AS bt FROM ev a JOIN ev2 b ON {on}"
    );
    let left = format!(
        "SELECT a.k, a.v AS av, a.ts AS at, b.v AS bv, b.ts AS bt FROM ev a LEFT JOIN ev2 b ON {on}"
    );
    let columns = "(k BIGINT, av BIGINT, at TIMESTAMP, bv BIGINT, bt TIMESTAMP)";
    session.execute(&format!(
        "CREATE SINK j AS {inner} WITH (topic = 'j');
         CREATE STREAM j_out {columns} WITH (topic = 'j');
         CREATE SINK lj AS {left} WITH (topic = 'lj');
         CREATE STREAM lj_out {columns} WITH (topic = 'lj');"
    ))?;
    for (query, table) in [(inner, "j_out"), (left, "lj_out")] {
        let expected = rendered(
            &mut session,
            &format!("SELECT * FROM ({query}) WHERE k >= 0"),
        )?;
        let lone = expected.iter().filter(|r| r.ends_with("NULL NULL")).count();
        anyhow::ensure!(expected.len() > 300, "too few pairs: {}", expected.len());
        anyhow::ensure!(
            table == "j_out" || lone > 20,
            "too few unmatched rows: {lone}"
        );
        converges(&mut session, seed, table, &expected)?;
    }
    Ok(())
}
