//! `weir sql` beside a running `weir serve`: statements go to the server's Postgres listener
//! (the address in `DATA_DIR/serve.json`), so they run on the server's engine like any
//! client's, and the output looks as it does embedded. Scripts are parsed here first (the
//! same parser: syntax errors are located without a round trip, and each statement's command
//! tag is known), then sent as one simple query; the server stops at the first error.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, SimpleQueryMessage};
use weir_sql::{parse, Position, WeirStatement};

/// A connection to a server's Postgres listener.
pub struct Remote {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    addr: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("addr", &self.addr).finish()
    }
}

impl Remote {
    /// Connects to `addr` (`HOST:PORT`); the server's notices are printed as they arrive.
    pub fn connect(addr: &str) -> Result<Remote> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (host, port) = addr
            .rsplit_once(':')
            .with_context(|| format!("bad Postgres address {addr}"))?;
        let config =
            format!("host={host} port={port} user=weir dbname=weir application_name=weir-sql");
        let client = runtime.block_on(async {
            let (client, mut connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
                .await
                .with_context(|| format!("cannot connect to `weir serve` at {addr}"))?;
            tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        Some(Ok(AsyncMessage::Notice(n))) => eprintln!("NOTICE: {}", n.message()),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            eprintln!("ERROR: the connection to the server failed: {e}");
                            return;
                        }
                        None => return,
                    }
                }
            });
            Ok::<_, anyhow::Error>(client)
        })?;
        Ok(Remote {
            runtime,
            client,
            addr: addr.to_string(),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Runs a script, printing each statement's output; `Err` carries the error as printed
    /// (located, with a caret), after the outputs of the statements before it.
    pub fn run(&mut self, sql: &str, timing: bool) -> Result<(), String> {
        let statements =
            parse(sql).map_err(|e| super::sql::located(sql, &e.to_string(), e.position()))?;
        let started = Instant::now();
        // Every message up to the first error: the statements before it ran, and print.
        let (messages, error) = self.runtime.block_on(async {
            let mut messages = Vec::new();
            let stream = match self.client.simple_query_raw(sql).await {
                Ok(s) => s,
                Err(e) => return (messages, Some(e)),
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(m) = stream.next().await {
                match m {
                    Ok(m) => messages.push(m),
                    Err(e) => return (messages, Some(e)),
                }
            }
            (messages, None)
        });
        let elapsed = started.elapsed();
        let mut tags = statements.iter();
        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        let mut columns: Vec<String> = Vec::new();
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(c) => {
                    columns = c.iter().map(|c| c.name().to_string()).collect();
                }
                SimpleQueryMessage::Row(r) => {
                    rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
                }
                SimpleQueryMessage::CommandComplete(n) => {
                    let statement = tags.next();
                    print_result(statement, &columns, &rows, n);
                    rows.clear();
                    columns.clear();
                }
                _ => {}
            }
        }
        if let Some(e) = error {
            let (message, at) = match e.as_db_error() {
                Some(db) => {
                    let at = match db.position() {
                        Some(tokio_postgres::error::ErrorPosition::Original(i)) => {
                            position_of(sql, *i as usize)
                        }
                        _ => None,
                    };
                    (db.message().to_string(), at)
                }
                None => (e.to_string(), None),
            };
            return Err(super::sql::located(sql, &message, at));
        }
        if timing {
            println!("Time: {:.3} ms", elapsed.as_secs_f64() * 1e3);
        }
        Ok(())
    }
}

impl Remote {
    /// Prints a push request's rows as the server streams them, until ctrl-c cancels it
    /// (the protocol's cancel request, which ends the server's subscription).
    pub fn push(&mut self, sql: &str) -> Result<(), String> {
        let client = &self.client;
        let outcome = self.runtime.block_on(async {
            let stream = client.simple_query_raw(sql).await?;
            let mut stream = std::pin::pin!(stream);
            let mut rows = 0u64;
            let mut cancelled = false;
            loop {
                tokio::select! {
                    m = stream.next() => match m {
                        None => break,
                        Some(Ok(SimpleQueryMessage::RowDescription(c))) => {
                            let names: Vec<&str> = c.iter().map(|c| c.name()).collect();
                            super::sql_push::print_line(&names);
                        }
                        Some(Ok(SimpleQueryMessage::Row(r))) => {
                            rows += 1;
                            let cells: Vec<&str> =
                                (0..r.len()).map(|i| r.get(i).unwrap_or("NULL")).collect();
                            super::sql_push::print_line(&cells);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) if cancelled => break,
                        Some(Err(e)) => return Err(e),
                    },
                    _ = tokio::signal::ctrl_c(), if !cancelled => {
                        cancelled = true;
                        client.cancel_token().cancel_query(tokio_postgres::NoTls).await?;
                    }
                }
            }
            Ok(rows)
        });
        match outcome {
            Ok(rows) => {
                println!("({rows} rows; ended by ctrl-c)");
                Ok(())
            }
            Err(e) => Err(match e.as_db_error() {
                Some(db) => db.message().to_string(),
                None => e.to_string(),
            }),
        }
    }
}

/// A statement's result as `weir sql` prints it embedded: an aligned table and a row count,
/// or the command's tag.
fn print_result(
    statement: Option<&WeirStatement>,
    columns: &[String],
    rows: &[Vec<Option<String>>],
    n: u64,
) {
    let mut out = std::io::stdout().lock();
    let tag = match statement {
        Some(WeirStatement::Create(c)) => Some(format!("CREATE {}", c.kind.name().to_uppercase())),
        Some(WeirStatement::CreateSink(c)) if c.view => Some("CREATE MATERIALIZED VIEW".into()),
        Some(WeirStatement::CreateSink(_)) => Some("CREATE SINK".into()),
        Some(WeirStatement::Drop { kind, .. }) => {
            Some(format!("DROP {}", kind.name().to_uppercase()))
        }
        Some(WeirStatement::Insert { .. }) => Some(format!("INSERT 0 {n}")),
        _ => None,
    };
    if let (Some(tag), true) = (tag, columns.is_empty()) {
        let _ = writeln!(out, "{tag}");
        return;
    }
    if !columns.is_empty() {
        let _ = writeln!(out, "{}", table(columns, rows));
    }
    let plural = if rows.len() == 1 { "row" } else { "rows" };
    let _ = writeln!(out, "({} {plural})", rows.len());
}

/// Rows as an aligned text table, as `weir sql` prints Arrow results.
fn table(columns: &[String], rows: &[Vec<Option<String>>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in rows {
        for (i, v) in r.iter().enumerate() {
            let len = v.as_deref().map_or(0, |v| v.chars().count());
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(len);
            }
        }
    }
    let line = format!(
        "+{}+",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let row = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c}{} ", " ".repeat(w - c.chars().count())))
            .collect();
        format!("|{}|", padded.join("|"))
    };
    let mut out = vec![
        line.clone(),
        row(columns.iter().map(String::as_str).collect()),
        line.clone(),
    ];
    for r in rows {
        out.push(row(r.iter().map(|v| v.as_deref().unwrap_or("")).collect()));
    }
    out.push(line);
    out.join("\n")
}

/// The line and column of the 1-based character index `i` in `sql` (Postgres' position).
fn position_of(sql: &str, i: usize) -> Option<Position> {
    let mut line = 1u64;
    let mut column = 1u64;
    for (n, c) in sql.chars().enumerate() {
        if n + 1 == i {
            return Some(Position { line, column });
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_map_back_to_lines_and_columns() {
        let p = position_of("SELECT a\nFROM bidz", 15);
        assert_eq!(p, Some(Position { line: 2, column: 6 }));
        assert_eq!(position_of("x", 5), None);
    }

    #[test]
    fn tables_align_like_arrows() {
        let t = table(
            &["a".into(), "name".into()],
            &[
                vec![Some("1".into()), None],
                vec![Some("22".into()), Some("bob".into())],
            ],
        );
        assert_eq!(
            t,
            "+----+------+\n| a  | name |\n+----+------+\n| 1  |      |\n| 22 | bob  |\n+----+------+"
        );
    }
}
