//! A sqllogictest-style runner for `tests/slt/*.slt`:
//!
//! ```text
//! statement ok                 -- runs, must succeed
//! statement error <text>       -- must fail with a message containing <text>
//! query [rowsort] [eventually] -- rows (values separated by one space, NULL for null),
//! SELECT …                     -- compared after `----`; `rowsort` sorts both sides;
//! ----                         -- `eventually` runs it again until it matches (a
//! 1 a                          -- persistent query's output), for up to `EVENTUALLY_MAX`
//! restart                      -- reopen the log and the session (the catalog must survive,
//!                              -- persistent queries resume)
//! ```
//! Records end at a blank line; `#` starts a comment line.

use std::path::{Path, PathBuf};

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use weir_sql::{Output, Session};

/// How long an `eventually` query is retried.
const EVENTUALLY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

fn open(dir: &Path) -> anyhow::Result<(weir_log::Log, Session)> {
    let log = weir_log::Log::open_with(dir, weir_log::LogOptions::without_cleaner())?;
    let (groups, txns) = weir_coord::start(&log)?;
    let engine = weir_sql::Engine {
        groups,
        txns,
        state_dir: dir.join("state"),
    };
    let session = Session::open_with_engine(&log, engine)?;
    Ok((log, session))
}

fn rows(output: &Output) -> anyhow::Result<Vec<String>> {
    let Output::Rows { batches, .. } = output else {
        anyhow::bail!("expected rows, got {output:?}");
    };
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            out.push(cells.join(" ").trim_end().to_string());
        }
    }
    Ok(out)
}

fn run_file(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let dir = tempfile::tempdir()?;
    let (mut _log, mut session) = open(dir.path())?;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", path.display(), n + 1);
        if line == "restart" {
            drop(session);
            drop(_log);
            (_log, session) = open(dir.path())?;
            continue;
        }
        let mut sql = Vec::new();
        let mut expected = Vec::new();
        let mut in_result = false;
        while let Some((_, l)) = lines.peek() {
            if l.trim().is_empty() {
                break;
            }
            let (_, l) = lines.next().unwrap_or_default();
            if l.trim_end() == "----" {
                in_result = true;
            } else if in_result {
                expected.push(l.trim_end().to_string());
            } else {
                sql.push(l);
            }
        }
        let sql = sql.join("\n");
        if line.starts_with("query") && line.contains("eventually") {
            eventually(&mut session, &sql, &expected, line.contains("rowsort"))
                .map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
            continue;
        }
        let result = session.execute(&sql);
        if line == "statement ok" {
            if let Err(e) = result {
                anyhow::bail!("{at}: expected success, got: {e}\n{sql}");
            }
        } else if let Some(want) = line.strip_prefix("statement error ") {
            match result {
                Ok(_) => anyhow::bail!("{at}: expected an error containing `{want}`\n{sql}"),
                Err(e) if e.to_string().contains(want) => {}
                Err(e) => anyhow::bail!("{at}: expected an error containing `{want}`, got: {e}"),
            }
        } else if line.starts_with("query") {
            let outcomes = result.map_err(|e| anyhow::anyhow!("{at}: {e}\n{sql}"))?;
            let last = outcomes
                .last()
                .ok_or_else(|| anyhow::anyhow!("{at}: no statement"))?;
            let mut got = rows(&last.output)?;
            if line.contains("rowsort") {
                got.sort();
                expected.sort();
            }
            anyhow::ensure!(
                got == expected,
                "{at}: {sql}\n--- expected\n{}\n--- got\n{}",
                expected.join("\n"),
                got.join("\n")
            );
        } else {
            anyhow::bail!("{at}: unknown directive `{line}`");
        }
    }
    Ok(())
}

/// Runs a query until its rows are `expected`.
fn eventually(
    session: &mut Session,
    sql: &str,
    expected: &[String],
    sort: bool,
) -> anyhow::Result<()> {
    let mut expected = expected.to_vec();
    if sort {
        expected.sort();
    }
    let deadline = std::time::Instant::now() + EVENTUALLY_MAX;
    loop {
        let outcomes = session.execute(sql)?;
        let last = outcomes
            .last()
            .ok_or_else(|| anyhow::anyhow!("no statement"))?;
        let mut got = rows(&last.output)?;
        if sort {
            got.sort();
        }
        if got == expected {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "{sql}\n--- expected (eventually)\n{}\n--- got\n{}",
                expected.join("\n"),
                got.join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn slt_files() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        // `WEIR_SLT=name` runs one file (while working on it).
        .filter(|p| {
            std::env::var("WEIR_SLT").map_or(true, |only| {
                p.file_stem().is_some_and(|s| s == only.as_str())
            })
        })
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failures = Vec::new();
    for f in &files {
        if let Err(e) = run_file(f) {
            failures.push(e.to_string());
        }
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}
