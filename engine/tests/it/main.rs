//! Integration tests of `weir-engine`.

mod dsl;
mod state;
mod task;
