//! Karst: a Kafka-compatible event log whose roles are deterministic, sans-IO state machines.
//!
//! Layout (see docs/architecture.md):
//! - [`protocol`]: Kafka wire framing, codec glue, record-batch helpers, error codes.
//! - [`storage`]: the `Storage` trait, its file backend and the simulated disk.
//! - [`log`]: the partition log (segments, indexes, recovery, retention, truncation).
//! - [`broker`]: the broker role (produce, fetch, metadata, offsets), sans-IO.
//! - [`node`]: one node, composing the roles it runs.
//! - [`runtime`]: the tokio driver (sockets, timers, the disk thread).
//! - [`client`]: Karst's own Kafka client.
//! - [`cli`]: the `karst` command-line tools.

pub mod broker;
pub mod buggify;
pub mod cli;
pub mod client;
pub mod config;
pub mod coordinator;
pub mod log;
pub mod node;
pub mod protocol;
pub mod runtime;
pub mod storage;

/// Milliseconds since the Unix epoch. Roles take time as an argument and never read a clock.
pub type Millis = i64;
