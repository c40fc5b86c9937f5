//! Integration tests of `weir-coord`.

mod groups;
