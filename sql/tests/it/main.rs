//! `weir-sql` integration tests: the `.slt` files under `tests/slt` (statements with expected
//! results and expected errors), and what a file cannot say (records written by other
//! producers, a catalog that survives a restart, persistent queries' counts, dead letters
//! and restarts).

mod cdc_source;
mod debezium;
mod logic;
mod oracle;
mod pg_sink;
mod push;
mod records;
mod retract;
mod streaming;
