//! Integration tests of `weir-engine`.

mod common;
mod dsl;
mod state;
mod task;
