//! Integration tests of `weir-engine`.

mod state;
mod task;
