//! Integration tests of `weir-log`: one binary, one module per concern.

mod basic;
mod cleanup;
mod codec;
mod common;
mod faults;
mod idempotence;
mod model;
mod read_only;
mod recovery;
mod transactions;
