//! Conversations and their members: creating them, looking them up, changing members, and a
//! user's list.

use realchat_events::Topic;
use realchat_outbox::enqueue;
use realchat_proto::events::v1::{MemberAdded, MemberRemoved, envelope::Payload};
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    CONVERSATION_COLUMNS, Conversation, ConversationRow, LISTED_MEMBERS, MESSAGE_COLUMNS,
    MessageRow, Summary, ids, lock_as_member, members_in,
};
use crate::{
    domain::{Kind, direct_key},
    error::Error,
};

/// Creates a conversation with `members` (caller included), or for a direct pair that already
/// has one, returns it. The bool says whether it was created.
pub async fn create(
    pool: &PgPool,
    caller: Uuid,
    kind: Kind,
    members: &[Uuid],
    title: Option<String>,
) -> Result<(Conversation, bool), Error> {
    let mut tx = pool.begin().await?;
    let key = match (kind, members) {
        (Kind::Direct, [a, b]) => Some(direct_key(*a, *b)),
        _ => None,
    };
    let id = Uuid::now_v7();
    let inserted: Option<ConversationRow> = sqlx::query_as(
        "INSERT INTO conversations AS c (id, kind, title, created_by, direct_key) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (direct_key) DO NOTHING
         RETURNING c.id, c.kind, c.title, c.created_by, c.created_at, c.last_seq",
    )
    .bind(id)
    .bind(kind.as_str())
    .bind(title)
    .bind(caller)
    .bind(&key)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = inserted else {
        // The pair already talks: hand back their conversation.
        let existing: ConversationRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations c WHERE c.direct_key = $1"
        )))
        .bind(&key)
        .fetch_one(&mut *tx)
        .await?;
        let members = members_in(&mut tx, existing.id).await?;
        tx.commit().await?;
        return Ok((Conversation::whole(existing, members), false));
    };
    sqlx::query("INSERT INTO members (conversation_id, user_id) SELECT $1, unnest($2::uuid[])")
        .bind(row.id)
        .bind(members)
        .execute(&mut *tx)
        .await?;
    // One event for every member: one per member, each naming all of them, would make a group
    // of 1,000 cost 36 MB of events.
    let key = row.id.to_string();
    let event = Payload::MemberAdded(MemberAdded {
        conversation_id: key.clone(),
        user_id: String::new(),
        added_by: caller.to_string(),
        member_ids: ids(members),
        last_seq: 0,
        user_ids: ids(members),
    });
    enqueue(&mut tx, Topic::Messages, &key, event).await?;
    tx.commit().await?;
    Ok((Conversation::whole(row, members.to_vec()), true))
}

/// The conversation, if `caller` is a member.
pub async fn conversation(
    pool: &PgPool,
    caller: Uuid,
    conversation: Uuid,
) -> Result<Conversation, Error> {
    let mut conn = pool.acquire().await?;
    let row: Option<ConversationRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations c JOIN members m ON m.conversation_id = c.id
         WHERE c.id = $1 AND m.user_id = $2"
    )))
    .bind(conversation)
    .bind(caller)
    .fetch_optional(&mut *conn)
    .await?;
    let row = row.ok_or(Error::NotFound)?;
    let members = members_in(&mut conn, row.id).await?;
    Ok(Conversation::whole(row, members))
}

/// Up to `limit` members of `conversation` after `after` (by id), and how many it has in all, if
/// `caller` is a member.
pub async fn members_page(
    pool: &PgPool,
    caller: Uuid,
    conversation: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<(Vec<Uuid>, i64), Error> {
    let mut conn = pool.acquire().await?;
    let is_member: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2)",
    )
    .bind(conversation)
    .bind(caller)
    .fetch_one(&mut *conn)
    .await?;
    if !is_member {
        return Err(Error::NotFound);
    }
    let page: Vec<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM members WHERE conversation_id = $1 AND user_id > $2
         ORDER BY user_id LIMIT $3",
    )
    .bind(conversation)
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM members WHERE conversation_id = $1")
        .bind(conversation)
        .fetch_one(&mut *conn)
        .await?;
    Ok((page, count))
}

/// Adds `user` to a group `caller` belongs to. Adding a member twice changes nothing.
pub async fn add_member(
    pool: &PgPool,
    caller: Uuid,
    conversation: Uuid,
    user: Uuid,
    max_members: usize,
) -> Result<Conversation, Error> {
    let mut tx = pool.begin().await?;
    let row = lock_as_member(&mut tx, conversation, caller)
        .await?
        .ok_or(Error::NotFound)?;
    if row.kind != Kind::Group.as_str() {
        return Err(Error::Forbidden(
            "members can only be added to a group".into(),
        ));
    }
    let mut members = members_in(&mut tx, conversation).await?;
    if members.binary_search(&user).is_ok() {
        tx.commit().await?;
        return Ok(Conversation::whole(row, members));
    }
    if members.len() >= max_members {
        return Err(Error::InvalidArgument(format!(
            "a group has at most {max_members} members"
        )));
    }
    sqlx::query("INSERT INTO members (conversation_id, user_id) VALUES ($1, $2)")
        .bind(conversation)
        .bind(user)
        .execute(&mut *tx)
        .await?;
    members.push(user);
    members.sort_unstable();
    let key = conversation.to_string();
    let event = Payload::MemberAdded(MemberAdded {
        conversation_id: key.clone(),
        user_id: user.to_string(),
        added_by: caller.to_string(),
        member_ids: ids(&members),
        last_seq: row.last_seq,
        user_ids: Vec::new(),
    });
    enqueue(&mut tx, Topic::Messages, &key, event).await?;
    tx.commit().await?;
    Ok(Conversation::whole(row, members))
}

/// Removes `user` from a group. A member may remove themself; removing others is for the
/// group's creator.
pub async fn remove_member(
    pool: &PgPool,
    caller: Uuid,
    conversation: Uuid,
    user: Uuid,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    let row = lock_as_member(&mut tx, conversation, caller)
        .await?
        .ok_or(Error::NotFound)?;
    if row.kind != Kind::Group.as_str() {
        return Err(Error::Forbidden(
            "members can only be removed from a group".into(),
        ));
    }
    if user != caller && row.created_by != caller {
        return Err(Error::Forbidden(
            "only the group's creator may remove other members".into(),
        ));
    }
    let removed = sqlx::query("DELETE FROM members WHERE conversation_id = $1 AND user_id = $2")
        .bind(conversation)
        .bind(user)
        .execute(&mut *tx)
        .await?;
    if removed.rows_affected() == 0 {
        return Err(Error::MemberNotFound("that user is not a member".into()));
    }
    let members = members_in(&mut tx, conversation).await?;
    let key = conversation.to_string();
    let event = Payload::MemberRemoved(MemberRemoved {
        conversation_id: key.clone(),
        user_id: user.to_string(),
        removed_by: caller.to_string(),
        member_ids: ids(&members),
    });
    enqueue(&mut tx, Topic::Messages, &key, event).await?;
    tx.commit().await?;
    Ok(())
}

/// `caller`'s conversations, most recent activity first, with unread counts and last messages.
pub async fn list(pool: &PgPool, caller: Uuid, limit: i64) -> Result<Vec<Summary>, Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        conversation: ConversationRow,
        read_seq: i64,
    }
    let mut conn = pool.acquire().await?;
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CONVERSATION_COLUMNS}, m.read_seq FROM members m JOIN conversations c ON c.id = m.conversation_id
         WHERE m.user_id = $1 ORDER BY c.last_activity_at DESC, c.id LIMIT $2"
    )))
    .bind(caller)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let conversation_ids: Vec<Uuid> = rows.iter().map(|r| r.conversation.id).collect();
    // The first members of each, by the primary key: a list of 500 groups of 1,000 reads (and
    // sends) 50,000 ids, not 500,000.
    let member_rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT c.id, m.user_id FROM unnest($1::uuid[]) AS c(id)
         CROSS JOIN LATERAL (
             SELECT user_id FROM members WHERE conversation_id = c.id ORDER BY user_id LIMIT $2
         ) AS m",
    )
    .bind(&conversation_ids)
    .bind(LISTED_MEMBERS)
    .fetch_all(&mut *conn)
    .await?;
    let counts: std::collections::HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(
        "SELECT conversation_id, count(*) FROM members WHERE conversation_id = ANY($1)
         GROUP BY conversation_id",
    )
    .bind(&conversation_ids)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let last_messages: Vec<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m
         WHERE (m.conversation_id, m.seq) IN (SELECT c.id, c.last_seq FROM conversations c WHERE c.id = ANY($1))"
    )))
    .bind(&conversation_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut members: std::collections::HashMap<Uuid, Vec<Uuid>> = std::collections::HashMap::new();
    for (conversation, user) in member_rows {
        members.entry(conversation).or_default().push(user);
    }
    let mut last: std::collections::HashMap<Uuid, MessageRow> = last_messages
        .into_iter()
        .map(|m| (m.conversation_id, m))
        .collect();
    Ok(rows
        .into_iter()
        .map(|row| {
            let id = row.conversation.id;
            Summary {
                unread_count: (row.conversation.last_seq - row.read_seq).max(0),
                last_message: last.remove(&id),
                conversation: Conversation {
                    members: members.remove(&id).unwrap_or_default(),
                    member_count: counts.get(&id).copied().unwrap_or(0),
                    row: row.conversation,
                },
            }
        })
        .collect())
}
