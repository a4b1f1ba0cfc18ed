//! Writing an event in the caller's transaction.

use prost::Message as _;
use realchat_proto::events::v1::{Envelope, envelope::Payload};
use realchat_runtime::telemetry::propagation::current_traceparent;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use realchat_events::Topic;

/// The channel the relay listens on; [`enqueue`] notifies it, and PostgreSQL delivers the
/// notification when (and only if) the transaction commits.
pub const NOTIFY_CHANNEL: &str = "realchat_outbox";

/// Adds `payload` as an event on `topic` with Kafka key `key`, inside the caller's transaction.
/// Returns the new event's id.
///
/// Pass the transaction's connection (`&mut *tx`): the event must commit or roll back with the
/// change it describes.
pub async fn enqueue(
    conn: &mut PgConnection,
    topic: Topic,
    key: &str,
    payload: Payload,
) -> Result<Uuid, sqlx::Error> {
    let event = NewEvent::new(topic, key.to_owned(), payload, current_traceparent());
    let event_id = event.event_id;
    enqueue_all(conn, vec![event]).await?;
    Ok(event_id)
}

/// An event to write with [`enqueue_all`].
#[derive(Debug, Clone)]
pub struct NewEvent {
    topic: Topic,
    key: String,
    event_id: Uuid,
    occurred_at_ms: i64,
    traceparent: String,
    payload: Payload,
}

impl NewEvent {
    /// An event on `topic` with Kafka key `key`, stamped now, in the trace context `traceparent`
    /// (a W3C header value, or empty). A change written by another task than the request's (a
    /// batch) passes the request's context, captured in the request.
    pub fn new(topic: Topic, key: String, payload: Payload, traceparent: String) -> Self {
        Self {
            topic,
            key,
            event_id: Uuid::now_v7(),
            occurred_at_ms: (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
            traceparent,
            payload,
        }
    }

    /// The id the event will carry.
    pub fn event_id(&self) -> Uuid {
        self.event_id
    }
}

/// Adds `events` in one statement inside the caller's transaction, in the given order (the relay
/// publishes outbox rows in the order they were written), with one notification for all of them.
pub async fn enqueue_all(
    conn: &mut PgConnection,
    events: Vec<NewEvent>,
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len();
    let (mut topics, mut keys, mut ids, mut types, mut traces, mut payloads) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for event in events {
        let event_type = event.payload.event_type();
        let envelope = Envelope {
            event_id: event.event_id.to_string(),
            event_type: event_type.to_owned(),
            occurred_at_ms: event.occurred_at_ms,
            traceparent: event.traceparent.clone(),
            payload: Some(event.payload),
        };
        topics.push(event.topic.logical_name());
        keys.push(event.key);
        ids.push(event.event_id);
        types.push(event_type);
        traces.push(event.traceparent);
        payloads.push(envelope.encode_to_vec());
    }
    // One round trip: the rows (numbered in array order), and the notification that goes out with
    // the commit.
    sqlx::query(
        "WITH rows AS (
             INSERT INTO outbox (topic, key, event_id, event_type, traceparent, payload)
             SELECT topic, key, event_id, event_type, traceparent, payload
             FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::bytea[])
                  WITH ORDINALITY AS e(topic, key, event_id, event_type, traceparent, payload, n)
             ORDER BY n
             RETURNING 1
         )
         SELECT pg_notify($7, '') WHERE EXISTS (SELECT 1 FROM rows)",
    )
    .bind(topics)
    .bind(keys)
    .bind(ids)
    .bind(types)
    .bind(traces)
    .bind(payloads)
    .bind(NOTIFY_CHANNEL)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
