//! Writing an event in the caller's transaction.

use prost::Message as _;
use realchat_proto::events::v1::{Envelope, envelope::Payload};
use realchat_runtime::telemetry::propagation::current_traceparent;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Topic;

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
    let event_id = Uuid::now_v7();
    let event_type = payload.event_type();
    let traceparent = current_traceparent();
    let envelope = Envelope {
        event_id: event_id.to_string(),
        event_type: event_type.to_owned(),
        occurred_at_ms: (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
        traceparent: traceparent.clone(),
        payload: Some(payload),
    };
    // One round trip: the row, and the notification that goes out with the commit.
    sqlx::query(
        "WITH row AS (
             INSERT INTO outbox (topic, key, event_id, event_type, traceparent, payload)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING 1
         )
         SELECT pg_notify($7, '') FROM row",
    )
    .bind(topic.logical_name())
    .bind(key)
    .bind(event_id)
    .bind(event_type)
    .bind(traceparent)
    .bind(envelope.encode_to_vec())
    .bind(NOTIFY_CHANNEL)
    .execute(&mut *conn)
    .await?;
    Ok(event_id)
}
