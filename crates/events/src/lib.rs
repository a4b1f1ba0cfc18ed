//! RealChat's events on Kafka, for every service that publishes or consumes them, with or without
//! a database of its own.
//!
//! - [`Topic`] and [`Topics`]: the topics, their partitions and their dead-letter twins; the one
//!   table of them (xtask creates the local broker's topics from it, with this crate's default
//!   features off).
//! - [`KafkaOptions`]: where the brokers are and how to reach them (TLS, SASL), and the producer,
//!   consumer and admin configurations built from that.
//! - [`consumer`]: the loop every consumer in RealChat uses: hand each event to a handler, store
//!   its offset only after the handler succeeded, retry a bounded number of times, then park the
//!   event in `<topic>.dlq` and move on; a member stuck without partitions rebuilds itself.
//!
//! Publishing from PostgreSQL through the transactional outbox is `realchat-outbox`, built on this.

#![forbid(unsafe_code)]

mod topics;

pub use topics::{Topic, Topics};

#[cfg(feature = "kafka")]
pub mod consumer;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kafka")]
pub mod metrics;
#[cfg(feature = "kafka")]
pub mod retry;
#[cfg(feature = "kafka")]
mod stall;
#[cfg(feature = "kafka")]
pub mod stats;

#[cfg(feature = "kafka")]
pub use kafka::KafkaOptions;
#[cfg(feature = "kafka")]
pub use stall::{GroupProgress, group_progress};
