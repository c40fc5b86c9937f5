//! Integration tests of the Kafka server: the wire protocol spoken with `kafka-protocol`'s
//! client-side encoders over real sockets (the third-party clients are tested from the `weir`
//! binary's tests), and malformed frames as raw bytes.

mod client;
mod malformed;
mod wire;
