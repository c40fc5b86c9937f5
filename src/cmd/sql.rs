//! `weir sql`: statements from `-c`, a file (`-f`), or an interactive REPL with line editing
//! and history. The session is embedded (the engine runs in this process) on the data
//! directory; when `weir serve` holds it, statements go to the server's Postgres listener
//! ([`super::sql_remote`]), or, with that listener off, queries run over a read-only view.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use weir_sql::{Outcome, Output, Session, SqlError};

use crate::cli::SqlArgs;

/// Lines of history kept between REPL sessions.
const HISTORY_LINES_MAX: usize = 1000;

const HELP: &str = "\
Statements end with `;` and may span lines. Examples:
  CREATE STREAM bids (auction BIGINT, price BIGINT, ts TIMESTAMP) WITH (partitions = 4);
  CREATE TABLE customers (id BIGINT PRIMARY KEY, name TEXT) WITH (topic = 'customers');
  INSERT INTO bids VALUES (42, 12000, TIMESTAMP '2026-01-01 00:00:01');
  SELECT auction, COUNT(*), MAX(price) FROM bids GROUP BY auction;
  CREATE SINK big AS SELECT * FROM bids WHERE price > 10000 WITH (topic = 'big-bids');
  SHOW STREAMS;  SHOW TABLES;  SHOW QUERIES;  DESCRIBE bids;  DROP SINK big;
  SUBSCRIBE TO stats;   SELECT auction, COUNT(*) FROM bids GROUP BY auction EMIT CHANGES;
    (rows as they change, with their op, until ctrl-c)
Persistent queries (sinks, INSERT INTO … SELECT) run while this session (or `weir serve`) does.
Meta-commands:
  \\d [name]   list relations, or describe one
  \\timing     toggle timing (on in the REPL)
  \\?          this help
  \\q          quit";

/// Where statements run.
enum Backend {
    /// An embedded session.
    Local(Session, super::sql_push::Interrupts),
    /// A running server's Postgres listener.
    Remote(Box<super::sql_remote::Remote>),
}

impl Backend {
    /// Runs a script, printing each statement's output (a push request's rows until ctrl-c);
    /// `Err` is the error as printed.
    fn run(&mut self, sql: &str, timing: bool) -> Result<(), String> {
        if let Some(request) = weir_sql::PushRequest::parse(sql) {
            return match self {
                Backend::Remote(r) => r.push(sql),
                Backend::Local(session, interrupts) => {
                    super::sql_push::run_local(session, &request, interrupts)
                }
            };
        }
        match self {
            Backend::Remote(r) => r.run(sql, timing),
            Backend::Local(session, _) => {
                let statements = weir_sql::parse(sql).map_err(|e| report_text(sql, &e))?;
                for s in statements {
                    let outcome = session.run(s).map_err(|e| report_text(sql, &e))?;
                    print_outcome(&outcome, timing).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }
    }
}

pub fn run(dir: &Path, args: SqlArgs) -> Result<()> {
    let mut backend = open(dir)?;
    if let Some(sql) = args.command {
        return run_script(&mut backend, &sql);
    }
    if let Some(file) = args.file {
        let sql = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        return run_script(&mut backend, &sql);
    }
    repl(&mut backend, dir)
}

/// The embedded engine on the data directory; beside a running server, its Postgres
/// listener; with that off, a read-only view.
fn open(dir: &Path) -> Result<Backend> {
    let log = match super::open_log(dir, false) {
        Ok(log) => log,
        Err(e) if is_locked(&e) => {
            if let Some(addr) = server_pg(dir) {
                return Ok(Backend::Remote(Box::new(
                    super::sql_remote::Remote::connect(&addr)?,
                )));
            }
            eprintln!(
                "NOTICE: another process (`weir serve` without --pg-listen?) holds {}; queries \
                 run over a read-only view and statements that write are refused",
                dir.display()
            );
            let log = super::open_log_read_only(dir)?;
            let session = Session::open(&log).context("cannot start the SQL session")?;
            return Ok(Backend::Local(session, Default::default()));
        }
        Err(e) => return Err(e),
    };
    let (groups, txns) = weir_coord::start(&log).context("cannot start the coordinators")?;
    let engine = weir_sql::Engine {
        groups,
        txns,
        state_dir: dir.join("state"),
    };
    let session =
        Session::open_with_engine(&log, engine).context("cannot start the SQL session")?;
    Ok(Backend::Local(session, Default::default()))
}

/// The Postgres address a running server wrote into `serve.json`, if any.
fn server_pg(dir: &Path) -> Option<String> {
    let raw = std::fs::read(dir.join(super::serve::SERVE_FILE)).ok()?;
    let info: super::serve::ServeInfo = serde_json::from_slice(&raw).ok()?;
    info.pg
}

fn is_locked(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<weir_log::LogError>(),
            Some(weir_log::LogError::Locked { .. })
        )
    })
}

/// Runs every statement, printing each result; the first error stops the script.
fn run_script(backend: &mut Backend, sql: &str) -> Result<()> {
    backend.run(sql, false).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The error as printed, with the statement's line and a caret under the column.
fn report_text(sql: &str, e: &SqlError) -> String {
    located(sql, &e.to_string(), e.position())
}

/// `message`, and where `at` is, the statement's line with a caret under the column.
pub(super) fn located(sql: &str, message: &str, at: Option<weir_sql::Position>) -> String {
    let mut out = message.to_string();
    if let Some(p) = at {
        if let Some(line) = sql.lines().nth(p.line.saturating_sub(1) as usize) {
            let pad = " ".repeat(p.column.saturating_sub(1) as usize);
            out.push_str(&format!("\n  {line}\n  {pad}^"));
        }
    }
    out
}

fn print_outcome(outcome: &Outcome, timing: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match &outcome.output {
        Output::Rows { batches, .. } => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            if !batches.is_empty() {
                writeln!(out, "{}", weir_sql::render_rows(batches)?)?;
            }
            let plural = if rows == 1 { "row" } else { "rows" };
            writeln!(out, "({rows} {plural})")?;
        }
        Output::Status(tag) => writeln!(out, "{tag}")?,
    }
    for n in &outcome.notices {
        eprintln!("NOTICE: {n}");
    }
    if timing {
        writeln!(out, "Time: {:.3} ms", outcome.elapsed.as_secs_f64() * 1e3)?;
    }
    Ok(())
}

/// Whether `buf` holds a complete statement: it ends with `;` outside quotes and comments.
fn complete(buf: &str) -> bool {
    let mut quote: Option<char> = None;
    let mut last = None;
    let mut chars = buf.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '-' && chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                continue;
            }
            None if !c.is_whitespace() => last = Some(c),
            None => {}
        }
    }
    quote.is_none() && last == Some(';')
}

fn repl(backend: &mut Backend, dir: &Path) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        // Piped input: run it as a script.
        let mut sql = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut sql)?;
        return run_script(backend, &sql);
    }
    let config = rustyline::Config::builder()
        .max_history_size(HISTORY_LINES_MAX)
        .context("history size")?
        .auto_add_history(false)
        .build();
    let mut editor: rustyline::DefaultEditor =
        rustyline::Editor::with_config(config).context("cannot start line editing")?;
    let history = dir.join(".weir_sql_history");
    let _ = editor.load_history(&history);
    match backend {
        Backend::Remote(r) => println!(
            "weir sql on {} through `weir serve` at {} — \\? for help, \\q to quit",
            dir.display(),
            r.addr()
        ),
        Backend::Local(..) => {
            println!("weir sql on {} — \\? for help, \\q to quit", dir.display())
        }
    }
    let mut timing = true;
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() { "weir> " } else { "   -> " };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buf.clear();
                continue;
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("cannot read input"),
        };
        let trimmed = line.trim();
        if buf.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            match meta(backend, trimmed, &mut timing) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => eprintln!("ERROR: {e}"),
            }
            continue;
        }
        buf.push_str(&line);
        buf.push('\n');
        if !complete(&buf) {
            continue;
        }
        let _ = editor.add_history_entry(buf.trim_end());
        let sql = std::mem::take(&mut buf);
        if let Err(e) = backend.run(&sql, timing) {
            eprintln!("ERROR: {e}");
        }
    }
    let _ = editor.save_history(&history);
    Ok(())
}

/// A `\` command; true to quit.
fn meta(backend: &mut Backend, cmd: &str, timing: &mut bool) -> Result<bool> {
    let mut words = cmd.split_whitespace();
    let sql = match (words.next().unwrap_or_default(), words.next()) {
        ("\\q", _) => return Ok(true),
        ("\\?", _) | ("\\h", _) => {
            println!("{HELP}");
            return Ok(false);
        }
        ("\\timing", _) => {
            *timing = !*timing;
            println!("Timing is {}.", if *timing { "on" } else { "off" });
            return Ok(false);
        }
        ("\\d", None) => "SHOW STREAMS; SHOW TABLES; SHOW MATERIALIZED VIEWS".to_string(),
        ("\\d", Some(name)) => format!("DESCRIBE {name}"),
        (other, _) => {
            println!("unknown command {other}; \\? for help");
            return Ok(false);
        }
    };
    backend
        .run(&sql, false)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::complete;

    #[test]
    fn statements_end_at_a_semicolon_outside_quotes_and_comments() {
        assert!(complete("SELECT 1;"));
        assert!(complete("SELECT 1;  \n"));
        assert!(!complete("SELECT ';'"));
        assert!(!complete("SELECT 1 -- done;\n"));
        assert!(complete("SELECT 'a;b';"));
        assert!(!complete("SELECT 1"));
    }
}
