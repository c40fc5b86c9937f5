//! Integration tests of `weir-engine`.

mod common;
mod dsl;
mod dsl_changes;
mod queue_input;
mod runtime;
mod state;
mod task;
mod time;
mod window;
