//! `weir-queue` integration tests: the share-partition state machine against a simple
//! in-memory model, over seeded random interleavings (the seed is printed).

mod model;
