//! `weir sql`: statements from `-c`, a file (`-f`), or an interactive REPL with line editing
//! and history. The session is embedded (the engine runs in this process) on the data
//! directory; when `weir serve` holds it, queries run over a read-only view.

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
Persistent queries (sinks, INSERT INTO … SELECT) run while this session (or `weir serve`) does.
Meta-commands:
  \\d [name]   list relations, or describe one
  \\timing     toggle timing (on in the REPL)
  \\?          this help
  \\q          quit";

pub fn run(dir: &Path, args: SqlArgs) -> Result<()> {
    let (log, read_only) = match super::open_log(dir, false) {
        Ok(log) => (log, false),
        Err(e) if is_locked(&e) => (super::open_log_read_only(dir)?, true),
        Err(e) => return Err(e),
    };
    if read_only {
        eprintln!(
            "NOTICE: another process (`weir serve`?) holds {}; queries run over a read-only view \
             and statements that write are refused",
            dir.display()
        );
    }
    let mut session = match read_only {
        true => Session::open(&log).context("cannot start the SQL session")?,
        false => {
            let (groups, txns) =
                weir_coord::start(&log).context("cannot start the coordinators")?;
            let engine = weir_sql::Engine {
                groups,
                txns,
                state_dir: dir.join("state"),
            };
            Session::open_with_engine(&log, engine).context("cannot start the SQL session")?
        }
    };
    if let Some(sql) = args.command {
        return run_script(&mut session, &sql);
    }
    if let Some(file) = args.file {
        let sql = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        return run_script(&mut session, &sql);
    }
    repl(&mut session, dir)
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
fn run_script(session: &mut Session, sql: &str) -> Result<()> {
    let statements = weir_sql::parse(sql).map_err(|e| report(sql, &e))?;
    for s in statements {
        let outcome = session.run(s).map_err(|e| report(sql, &e))?;
        print_outcome(&outcome, false)?;
    }
    Ok(())
}

/// The error as printed, with the statement's line and a caret under the column.
fn report(sql: &str, e: &SqlError) -> anyhow::Error {
    anyhow::anyhow!("{}", located(sql, e))
}

fn located(sql: &str, e: &SqlError) -> String {
    let at = match e {
        SqlError::Syntax { at, .. }
        | SqlError::Plan { at, .. }
        | SqlError::UnknownRelation { at, .. }
        | SqlError::Exists { at, .. }
        | SqlError::Unsupported { at, .. }
        | SqlError::BadOption { at, .. } => at.0,
        _ => None,
    };
    let mut out = e.to_string();
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

fn repl(session: &mut Session, dir: &Path) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        // Piped input: run it as a script.
        let mut sql = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut sql)?;
        return run_script(session, &sql);
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
    println!("weir sql on {} — \\? for help, \\q to quit", dir.display());
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
            match meta(session, trimmed, &mut timing) {
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
        match weir_sql::parse(&sql) {
            Err(e) => eprintln!("ERROR: {}", located(&sql, &e)),
            Ok(statements) => {
                for s in statements {
                    match session.run(s) {
                        Ok(o) => print_outcome(&o, timing)?,
                        Err(e) => {
                            eprintln!("ERROR: {}", located(&sql, &e));
                            break;
                        }
                    }
                }
            }
        }
    }
    let _ = editor.save_history(&history);
    Ok(())
}

/// A `\` command; true to quit.
fn meta(session: &mut Session, cmd: &str, timing: &mut bool) -> Result<bool> {
    let mut words = cmd.split_whitespace();
    match (words.next().unwrap_or_default(), words.next()) {
        ("\\q", _) => return Ok(true),
        ("\\?", _) | ("\\h", _) => println!("{HELP}"),
        ("\\timing", _) => {
            *timing = !*timing;
            println!("Timing is {}.", if *timing { "on" } else { "off" });
        }
        ("\\d", None) => {
            for o in session.execute("SHOW STREAMS; SHOW TABLES")? {
                print_outcome(&o, false)?;
            }
        }
        ("\\d", Some(name)) => {
            for o in session.execute(&format!("DESCRIBE {name}"))? {
                print_outcome(&o, false)?;
            }
        }
        (other, _) => println!("unknown command {other}; \\? for help"),
    }
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
