//! `weir sql` printing a push request (`SUBSCRIBE TO v`, `SELECT … EMIT CHANGES`): its rows
//! as they come, one line each (`op | column | …`, as psql's unaligned output), until ctrl-c,
//! which ends the request and returns to the prompt. Embedded, the session's subscription is
//! read here; beside a server, the rows stream from its Postgres listener and ctrl-c sends
//! the protocol's cancel request.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use weir_sql::datafusion::arrow::array::RecordBatch;
use weir_sql::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use weir_sql::{PushRequest, Session};

/// How long a wait for rows lasts before ctrl-c is checked again.
const PUSH_POLL: Duration = Duration::from_millis(200);

/// Counts ctrl-c presses, from the first push request of the process on (the handler
/// replaces the default exit; at the REPL's prompt line editing reads ctrl-c as a key).
#[derive(Debug, Clone, Default)]
pub struct Interrupts(Option<Arc<AtomicU64>>);

impl Interrupts {
    /// The presses so far, listening from now on if not yet.
    fn count(&mut self) -> Result<Arc<AtomicU64>> {
        if let Some(c) = &self.0 {
            return Ok(c.clone());
        }
        let count = Arc::new(AtomicU64::new(0));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let c = count.clone();
        std::thread::Builder::new()
            .name("weir-sql-ctrl-c".into())
            .spawn(move || {
                runtime.block_on(async move {
                    while tokio::signal::ctrl_c().await.is_ok() {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .context("cannot listen for ctrl-c")?;
        self.0 = Some(count.clone());
        Ok(count)
    }

    /// A watch that tells whether ctrl-c was pressed since it was made.
    pub fn watch(&mut self) -> Result<Interrupted> {
        let count = self.count()?;
        let seen = count.load(Ordering::SeqCst);
        Ok(Interrupted { count, seen })
    }
}

/// Whether ctrl-c came since the watch began.
#[derive(Debug)]
pub struct Interrupted {
    count: Arc<AtomicU64>,
    seen: u64,
}

impl Interrupted {
    /// Whether ctrl-c was pressed since the watch began.
    pub fn now(&self) -> bool {
        self.count.load(Ordering::SeqCst) != self.seen
    }
}

/// Prints an embedded session's push request until ctrl-c; `Err` is the error as printed.
pub fn run_local(
    session: &mut Session,
    request: &PushRequest,
    interrupts: &mut Interrupts,
) -> Result<(), String> {
    let stop = interrupts.watch().map_err(|e| e.to_string())?;
    let mut subscription = session.push(request).map_err(|e| e.to_string())?;
    let names: Vec<String> = subscription
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    print_line(&names);
    let mut rows = 0;
    while !stop.now() {
        let batch = subscription
            .next_batch(PUSH_POLL)
            .map_err(|e| e.to_string())?;
        rows += batch.num_rows();
        print_batch(&batch).map_err(|e| e.to_string())?;
    }
    println!("({rows} rows; ended by ctrl-c)");
    Ok(())
}

/// One row as a line.
pub fn print_line<S: AsRef<str>>(cells: &[S]) {
    let line: Vec<&str> = cells.iter().map(AsRef::as_ref).collect();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.join(" | "));
    let _ = out.flush();
}

fn print_batch(batch: &RecordBatch) -> Result<()> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<ArrayFormatter<'_>> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<_, _>>()?;
    for row in 0..batch.num_rows() {
        let cells: Vec<String> = formatters
            .iter()
            .map(|f| f.value(row).to_string())
            .collect();
        print_line(&cells);
    }
    Ok(())
}
