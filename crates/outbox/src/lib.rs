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
//! The outbox table every service with events declares in its own migrations:
//!
//! ```sql
//! CREATE TABLE outbox (
//!     id          bigserial PRIMARY KEY,
//!     topic       text NOT NULL,            -- a `Topic`'s logical name, e.g. `messages`
//!     key         text NOT NULL,            -- the Kafka key: conversation or user id
//!     event_id    uuid NOT NULL,
//!     event_type  text NOT NULL,
//!     traceparent text NOT NULL DEFAULT '',
//!     payload     bytea NOT NULL,           -- an encoded `realchat.events.v1.Envelope`
//!     created_at  timestamptz NOT NULL DEFAULT now()
//! );
//! -- Where events can exceed 2 KB (messaging's carry the member ids): rows live only until the
//! -- relay deletes them, so compressing them is CPU for nothing.
//! ALTER TABLE outbox ALTER COLUMN payload SET STORAGE EXTERNAL;
//! ```

#![forbid(unsafe_code)]

mod enqueue;
pub mod metrics;
pub mod relay;

pub use enqueue::{NOTIFY_CHANNEL, NewEvent, enqueue, enqueue_all};
