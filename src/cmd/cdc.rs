//! `weir cdc postgres`: runs a PostgreSQL change data capture source over the data directory
//! until ctrl-c or SIGTERM, retrying while PostgreSQL is down (see [`weir_cdc`]).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use weir_cdc::{run_until_stopped, PgSourceConfig};

use crate::cli::CdcPostgresArgs;

/// How long the source waits when the slot has nothing new.
const CDC_POLL: Duration = Duration::from_millis(20);

pub fn postgres(dir: &Path, args: CdcPostgresArgs) -> Result<()> {
    let log = super::open_log(dir, true)?;
    let (_groups, txns) = weir_coord::start(&log).context("cannot start the coordinators")?;
    let config = PgSourceConfig {
        name: args.name.unwrap_or_else(|| args.slot.clone()),
        url: args.url,
        publication: args.publication,
        slot: args.slot,
        topic_prefix: args.topic_prefix,
        partitions: args.partitions,
        poll: CDC_POLL,
    };
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signal(stop.clone())?;
    eprintln!(
        "weir cdc postgres: `{}` from publication {} (slot {}) into {}.schema.table; ctrl-c stops",
        config.name, config.publication, config.slot, config.topic_prefix
    );
    let progress = run_until_stopped(&log, &txns, &config, &stop)
        .with_context(|| format!("CDC source `{}` stopped", config.name))?;
    eprintln!(
        "weir cdc postgres: stopped at LSN {}: {} events, {} transactions",
        progress.lsn(),
        progress.events,
        progress.transactions
    );
    Ok(())
}

/// Sets `stop` at ctrl-c or SIGTERM.
fn stop_on_signal(stop: Arc<AtomicBool>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("weir-cdc-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(t) => t,
                        Err(_) => return,
                    };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                stop.store(true, Ordering::SeqCst);
            })
        })
        .context("cannot listen for signals")?;
    Ok(())
}
