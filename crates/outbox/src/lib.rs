//! Events out of PostgreSQL and into Kafka: the transactional outbox.
//!
//! - [`enqueue`] writes an event into the `outbox` table inside the caller's transaction, so the
//!   event exists if and only if the business change committed; [`enqueue_all`] writes several in
//!   one statement (messaging's batches of sends).
//! - [`relay::Relay`] moves outbox rows to Kafka and deletes them only after the broker acknowledged
//!   them. One relay per database publishes at a time (a PostgreSQL advisory lock elects it), which
//!   is what keeps per-key order with many replicas; the others stand by and take over when it dies.
//!
//! Topics, the Kafka clients' configuration and the consumer loop are `realchat-events`, which
//! services that own no database (delivery) use without this crate.
//!
//! The outbox table is this crate's: [`MIGRATOR`] creates it (`migrations/`), and each service
//! that publishes applies it after its own migrations, keeping its history in a table of its own
//! (`_realchat_outbox_migrations`) so its versions never mix with the service's.

#![forbid(unsafe_code)]

mod enqueue;
pub mod metrics;
pub mod relay;

pub use enqueue::{NOTIFY_CHANNEL, NewEvent, enqueue, enqueue_all};

use std::sync::LazyLock;

use sqlx::migrate::Migrator;

/// The outbox table's migrations, for [`realchat_runtime::db::Database::open`] after the
/// service's own.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_realchat_outbox_migrations");
    migrator
});
