//! `weir bench …`: throughput and latency of the embedded log (`log.rs`), of engine pipelines
//! (`pipeline.rs`), of windowed aggregations (`window.rs`), of stream–stream joins
//! (`join.rs`), of task restarts (`restart.rs`), of SQL queries (`sql.rs`) and of pull
//! queries through the Postgres protocol (`pull.rs`), of change events into updating views
//! (`changes.rs`), of the PostgreSQL CDC source (`cdc.rs`) and of the PostgreSQL sink
//! (`pg_sink.rs`), of queues through the Rust API (`queue.rs`) and the SQS API (`sqs.rs`),
//! in a scratch directory inside the data
//! directory (removed afterwards), so the figures are for the same disk the user's data is on.

mod cdc;
mod changes;
mod join;
mod log;
mod pg_sink;
mod pipeline;
mod pull;
mod queue;
mod restart;
mod sql;
mod sqs;
mod window;

pub use self::log::{consume, produce, rebalance};
pub use cdc::cdc;
pub use changes::changes;
pub use join::join;
pub use pg_sink::pg_sink;
pub use pipeline::pipeline;
pub use pull::pull;
pub use queue::queue;
pub use restart::restart;
pub use sql::sql;
pub use sqs::sqs;
pub use window::window;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(data_dir: &Path, what: &str) -> Result<Scratch> {
        let p = data_dir.join(format!(".bench-{what}-{}", std::process::id()));
        if p.exists() {
            std::fs::remove_dir_all(&p)?;
        }
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn payload(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Prints progress to stderr every second until stopped.
fn progress(
    label: &'static str,
    done: Arc<AtomicU64>,
    total: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let secs = start.elapsed().as_secs();
            if secs >= 1 && start.elapsed().subsec_millis() < 200 {
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "  {label}: {n}/{total} records ({:.0}%) after {secs} s",
                    n as f64 * 100.0 / total.max(1) as f64
                );
            }
        }
    })
}

fn start_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn settle(
    pending: &mut VecDeque<(weir_log::AppendTicket, Instant, u64)>,
    hist: &mut Histogram<u64>,
    done: &AtomicU64,
) -> Result<()> {
    let Some((t, at, n)) = pending.pop_front() else {
        return Ok(());
    };
    t.wait()?;
    hist.saturating_record(at.elapsed().as_micros() as u64);
    done.fetch_add(n, Ordering::Relaxed);
    Ok(())
}

/// CPU time used by this process so far (all threads, user + system), from /proc/self/stat;
/// `None` where that file does not exist.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in clock
    // ticks of 1/100 s on Linux.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
