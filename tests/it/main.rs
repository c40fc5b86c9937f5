//! Integration tests of the `weir` binary: the CLI as a user runs it, and crash tests that
//! SIGKILL a real `weir` process under load.

mod cdc_crash;
mod cdc_serve_crash;
mod cli;
mod crash;
mod engine_crash;
mod kafka_crash;
mod kafka_interop;
mod pg_interop;
mod queue_cli;
mod queue_crash;
mod queue_pipeline_crash;
mod sql_crash;
mod sqs_interop;
mod util;
mod window_crash;
