//! Read positions, which only move forward, and their `read.updated` events.

use realchat_events::Topic;
use realchat_outbox::enqueue;
use realchat_proto::events::v1::{ReadUpdated, envelope::Payload};
use sqlx::PgPool;
use uuid::Uuid;

use super::{ids, lock_as_member, members_in};
use crate::error::Error;

/// Moves `caller`'s read position forward to `seq` (capped at the newest message). Emits
/// `read.updated` only when it moved.
pub async fn mark_read(
    pool: &PgPool,
    caller: Uuid,
    conversation: Uuid,
    seq: i64,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    // The `read.updated` row goes into the outbox under the conversation's lock, as every row of
    // its key does, so that the relay publishes it in commit order with the conversation's
    // messages and member changes (see `realchat_outbox::relay`). The lock comes first, as in a
    // send (which then moves the sender's read position): the other order could deadlock.
    if lock_as_member(&mut tx, conversation, caller)
        .await?
        .is_none()
    {
        return Err(Error::NotFound);
    }
    let moved: Option<i64> = sqlx::query_scalar(
        "WITH target AS (
             SELECT LEAST($3, c.last_seq) AS seq FROM conversations c WHERE c.id = $1
         )
         UPDATE members m SET read_seq = target.seq FROM target
         WHERE m.conversation_id = $1 AND m.user_id = $2 AND target.seq > m.read_seq
         RETURNING m.read_seq",
    )
    .bind(conversation)
    .bind(caller)
    .bind(seq)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(read_seq) = moved else {
        // Already at or past `seq`: nothing to tell anyone.
        tx.commit().await?;
        return Ok(());
    };
    let members = members_in(&mut tx, conversation).await?;
    let key = conversation.to_string();
    let event = Payload::ReadUpdated(ReadUpdated {
        conversation_id: key.clone(),
        user_id: caller.to_string(),
        seq: read_seq,
        member_ids: ids(&members),
    });
    enqueue(&mut tx, Topic::Messages, &key, event).await?;
    tx.commit().await?;
    Ok(())
}
