//! Command implementations. Each opens the log, does one thing, and reports.

mod bench;
mod builtin;
mod cdc;
mod consume;
mod group;
mod hosted;
mod pipeline;
mod produce;
pub mod queue;
mod remote;
mod serve;
mod sql;
mod sql_push;
mod sql_remote;
mod topic;

use anyhow::{Context, Result};
use weir_log::{Log, LogOptions};

use crate::cli::{BenchCmd, Cli, Command};

/// Opens the data directory. The background cleaner is off for short-lived commands; retention
/// and compaction run in long-lived processes (and `weir topic compact`).
pub fn open_log(cli_dir: &std::path::Path, background_cleaner: bool) -> Result<Log> {
    let mut opts = LogOptions::default();
    if !background_cleaner {
        opts.cleaner_interval = None;
    }
    Log::open_with(cli_dir, opts)
        .with_context(|| format!("cannot open data directory {}", cli_dir.display()))
}

/// Opens a read-only view: works while another `weir` process writes the same directory.
pub fn open_log_read_only(dir: &std::path::Path) -> Result<Log> {
    match Log::open_read_only(dir, LogOptions::default()) {
        // The error says it all; a context line would repeat the directory.
        Err(e @ weir_log::LogError::NoLog(_)) => Err(e.into()),
        r => r.with_context(|| format!("cannot open data directory {}", dir.display())),
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Topic(t) => topic::run(&cli.data_dir, t),
        Command::Produce(a) => produce::run(&cli.data_dir, a),
        Command::Consume(a) if a.group.is_some() => group::consume(&cli.data_dir, a),
        Command::Consume(a) => consume::run(&cli.data_dir, a),
        Command::Group(g) => group::run(&cli.data_dir, g),
        Command::Queue(q) => queue::run(&cli.data_dir, q),
        Command::Pipeline(p) => pipeline::run(&cli.data_dir, p),
        Command::Bench(BenchCmd::Produce(a)) => bench::produce(&cli.data_dir, a),
        Command::Bench(BenchCmd::Consume(a)) => bench::consume(&cli.data_dir, a),
        Command::Bench(BenchCmd::Rebalance(a)) => bench::rebalance(&cli.data_dir, a),
        Command::Bench(BenchCmd::Pipeline(a)) => bench::pipeline(&cli.data_dir, a),
        Command::Bench(BenchCmd::Restart(a)) => bench::restart(&cli.data_dir, a),
        Command::Bench(BenchCmd::Window(a)) => bench::window(&cli.data_dir, a),
        Command::Bench(BenchCmd::Join(a)) => bench::join(&cli.data_dir, a),
        Command::Bench(BenchCmd::Sql(a)) => bench::sql(&cli.data_dir, a),
        Command::Bench(BenchCmd::Pull(a)) => bench::pull(&cli.data_dir, a),
        Command::Bench(BenchCmd::PgSink(a)) => bench::pg_sink(&cli.data_dir, a),
        Command::Bench(BenchCmd::Changes(a)) => bench::changes(&cli.data_dir, a),
        Command::Bench(BenchCmd::Cdc(a)) => bench::cdc(&cli.data_dir, a),
        Command::Bench(BenchCmd::Queue(a)) => bench::queue(&cli.data_dir, a),
        Command::Bench(BenchCmd::Sqs(a)) => bench::sqs(&cli.data_dir, a),
        Command::Serve(a) => serve::run(&cli.data_dir, a),
        Command::Sql(a) => sql::run(&cli.data_dir, a),
        Command::Cdc(crate::cli::CdcCmd::Postgres(a)) => cdc::postgres(&cli.data_dir, a),
    }
}
