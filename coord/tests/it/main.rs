//! Integration tests of `weir-coord`.

mod groups;
mod transactions;
