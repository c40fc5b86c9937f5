//! The `weir` command line: parses arguments and calls the crates. No logic of its own beyond
//! presentation (formats, progress, summaries).

mod cli;
mod cmd;
mod format;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the engine allocates a few small buffers per record (decoded keys and values,
/// encoded outputs); mimalloc's thread-local free lists make that markedly cheaper than glibc's
/// malloc (measured with `weir bench pipeline`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cmd::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the error and its causes.
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!(": {cause}"));
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
