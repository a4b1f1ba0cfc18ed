//! The messaging database: every query the service makes.
//!
//! Every change that other services must hear about writes its event with
//! [`realchat_outbox::enqueue`] in the same transaction. Changes within one conversation first lock
//! the conversation's row, which serialises them: that is what makes `seq` gapless and
//! commit-ordered, makes the idempotency check of a send race-free, and gives the outbox its
//! per-conversation order.

use realchat_outbox::{NewEvent, Topic, enqueue, enqueue_all};
use realchat_proto::events::v1::{
    MemberAdded, MemberRemoved, MessageCreated, ReadUpdated, envelope::Payload,
};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::{Body, ClientMsgId, Kind, Page, direct_key},
    error::Error,
};

/// A conversation as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConversationRow {
    pub id: Uuid,
    pub kind: String,
    pub title: Option<String>,
    pub created_by: Uuid,
    pub created_at: OffsetDateTime,
    pub last_seq: i64,
}

/// A conversation with its members.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub row: ConversationRow,
    pub members: Vec<Uuid>,
}

/// A message as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub seq: i64,
    pub sender_id: Uuid,
    pub client_msg_id: String,
    pub body: String,
    pub created_at: OffsetDateTime,
}

/// What the send statements return: the message, whether this send created it, and on the first
/// new message of its conversation in the transaction, the members its event names.
#[derive(sqlx::FromRow)]
struct SentRow {
    #[sqlx(flatten)]
    message: MessageRow,
    created: bool,
    member_ids: Option<Vec<Uuid>>,
}

/// A [`SentRow`] of a batch, with the position (from 1) of the send it answers.
#[derive(sqlx::FromRow)]
struct BatchRow {
    ord: i64,
    #[sqlx(flatten)]
    sent: SentRow,
}

/// One entry of a user's conversation list.
#[derive(Debug, Clone)]
pub struct Summary {
    pub conversation: Conversation,
    pub unread_count: i64,
    pub last_message: Option<MessageRow>,
}

const CONVERSATION_COLUMNS: &str = "c.id, c.kind, c.title, c.created_by, c.created_at, c.last_seq";
const MESSAGE_COLUMNS: &str =
    "id, conversation_id, seq, sender_id, client_msg_id, body, created_at";

fn ids(members: &[Uuid]) -> Vec<String> {
    members.iter().map(Uuid::to_string).collect()
}

/// Records a registered user. Idempotent: a redelivered event changes nothing.
pub async fn remember_user(
    pool: &PgPool,
    id: Uuid,
    username: &str,
    registered_at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO known_users (id, username, registered_at) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(username)
    .bind(registered_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The ids in `users` that messaging has never heard of.
pub async fn unknown_users(pool: &PgPool, users: &[Uuid]) -> Result<Vec<Uuid>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT u FROM unnest($1::uuid[]) AS u WHERE NOT EXISTS (SELECT 1 FROM known_users k WHERE k.id = u)",
    )
    .bind(users)
    .fetch_all(pool)
    .await?)
}

async fn members_in(conn: &mut PgConnection, conversation: Uuid) -> Result<Vec<Uuid>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT user_id FROM members WHERE conversation_id = $1 ORDER BY user_id",
    )
    .bind(conversation)
    .fetch_all(&mut *conn)
    .await?)
}

/// Locks the conversation's row if `user` is a member of it; `None` otherwise.
async fn lock_as_member(
    conn: &mut PgConnection,
    conversation: Uuid,
    user: Uuid,
) -> Result<Option<ConversationRow>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations c
         WHERE c.id = $1 AND EXISTS (SELECT 1 FROM members m WHERE m.conversation_id = c.id AND m.user_id = $2)
         FOR UPDATE OF c"
    )))
    .bind(conversation)
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?)
}

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
        return Ok((
            Conversation {
                row: existing,
                members,
            },
            false,
        ));
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
    Ok((
        Conversation {
            row,
            members: members.to_vec(),
        },
        true,
    ))
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
    Ok(Conversation { row, members })
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
        return Ok(Conversation { row, members });
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
    Ok(Conversation { row, members })
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

/// One send, as [`send_all`] takes it.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub caller: Uuid,
    pub conversation: Uuid,
    pub client_msg_id: ClientMsgId,
    pub body: Body,
    /// The trace context of the request, for the event (the transaction may run in another task).
    pub traceparent: String,
}

/// A send's outcome: the message, and whether this send created it (`false`: a retry of a
/// `client_msg_id` the sender already used, answered with the original).
pub type Sent = Result<(MessageRow, bool), Error>;

/// Stores one message with its conversation's next seq and its `message.created` event.
pub async fn send(pool: &PgPool, message: NewMessage) -> Sent {
    let results = send_all(pool, std::slice::from_ref(&message)).await?;
    let mut results = results.into_iter();
    match (results.next(), results.next()) {
        (Some(outcome), None) => outcome,
        _ => Err(anyhow::anyhow!("one send, and not one outcome").into()),
    }
}

/// Stores `messages` in one transaction (group commit): each gets its conversation's next seq, and
/// each new one its `message.created` event. Returns one outcome per message, in order; a message
/// whose sender is not a member gets `Err(NotFound)` without failing the others. `Err` means the
/// transaction did not commit and nothing of it was stored.
///
/// Three statements whatever the batch's size, then the commit: one that locks every conversation
/// involved (in id order, so that two batches never wait on each other in a cycle) and checks
/// membership, one that stores the messages, one for all the events. Sends to one conversation
/// within a batch take consecutive seqs in the order given.
///
/// A lone message is stored by [`insert_message`], several by [`insert_messages`]: the statement
/// that handles a batch costs more than the one made for a single message (under `pgbench -c 8`,
/// 1,360 to 1,390 transactions per second against 1,650 to 1,690), breaks even at 2 messages and
/// stores 1.2 times as many at 4 and twice as many at 16.
pub async fn send_all(pool: &PgPool, messages: &[NewMessage]) -> Result<Vec<Sent>, Error> {
    let mut tx = pool.begin().await?;
    // The lock makes each idempotency lookup below exact: a racing retry in another transaction
    // waits here, then (in the next statement, on a snapshot taken after the wait) finds the
    // message its twin committed.
    let (conversations, callers): (Vec<Uuid>, Vec<Uuid>) =
        messages.iter().map(|m| (m.conversation, m.caller)).unzip();
    let memberships: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT c.id, m.user_id FROM conversations c
         JOIN unnest($1::uuid[], $2::uuid[]) AS s(conversation_id, user_id) ON s.conversation_id = c.id
         JOIN members m ON m.conversation_id = c.id AND m.user_id = s.user_id
         ORDER BY c.id
         FOR UPDATE OF c",
    )
    .bind(&conversations)
    .bind(&callers)
    .fetch_all(&mut *tx)
    .await?;

    let allowed: Vec<&NewMessage> = messages
        .iter()
        .filter(|m| memberships.contains(&(m.conversation, m.caller)))
        .collect();
    let stored = match allowed[..] {
        [] => Vec::new(),
        [message] => vec![insert_message(&mut tx, message).await?],
        _ => insert_messages(&mut tx, &allowed).await?,
    };
    let mut stored = stored.into_iter();

    let mut results = Vec::with_capacity(messages.len());
    let mut events = Vec::new();
    let mut rosters: Vec<(Uuid, Vec<String>)> = Vec::new();
    for message in messages {
        if !memberships.contains(&(message.conversation, message.caller)) {
            results.push(Err(Error::NotFound));
            continue;
        }
        let SentRow {
            message: row,
            created,
            member_ids: members,
        } = stored.next().ok_or_else(|| {
            anyhow::anyhow!("the send statement answered fewer sends than it got")
        })?;
        if let Some(members) = members {
            rosters.push((message.conversation, ids(&members)));
        }
        if created {
            let member_ids = rosters
                .iter()
                .find(|(conversation, _)| *conversation == message.conversation)
                .map(|(_, members)| members.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!("a new message without its conversation's members")
                })?;
            events.push(NewEvent::new(
                Topic::Messages,
                message.conversation.to_string(),
                Payload::MessageCreated(MessageCreated {
                    message_id: row.id.to_string(),
                    conversation_id: message.conversation.to_string(),
                    seq: row.seq,
                    sender_id: message.caller.to_string(),
                    client_msg_id: row.client_msg_id.clone(),
                    body: row.body.clone(),
                    created_at_ms: unix_ms(row.created_at),
                    member_ids,
                }),
                message.traceparent.clone(),
            ));
        }
        results.push(Ok((row, created)));
    }
    enqueue_all(&mut tx, events).await?;
    tx.commit().await?;
    Ok(results)
}

/// Stores `messages` (whose conversations are locked, and whose senders are members) in one
/// statement, answering each in order with its message, whether it is new, and, on the first new
/// message of each conversation, the members its event names.
///
/// A send whose `(conversation, sender, client_msg_id)` is already stored, or appears earlier in
/// the batch, is a retry: it is answered with the original and takes no seq. Every new message
/// takes the next seq of its conversation, in batch order, and moves its sender's read position
/// up to it (writing a message means having read the conversation up to it).
async fn insert_messages(
    conn: &mut PgConnection,
    messages: &[&NewMessage],
) -> Result<Vec<SentRow>, Error> {
    let n = messages.len();
    let (mut ids, mut conversations, mut senders, mut client_msg_ids, mut bodies) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for message in messages {
        ids.push(Uuid::now_v7());
        conversations.push(message.conversation);
        senders.push(message.caller);
        client_msg_ids.push(message.client_msg_id.as_str());
        bodies.push(message.body.as_str());
    }
    let rows: Vec<BatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[])
                  WITH ORDINALITY AS i(id, conversation_id, sender_id, client_msg_id, body, ord)
         ),
         existing AS (
             SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE (conversation_id, sender_id, client_msg_id) IN
                   (SELECT conversation_id, sender_id, client_msg_id FROM input)
         ),
         fresh AS (
             SELECT DISTINCT ON (conversation_id, sender_id, client_msg_id) * FROM input i
             WHERE NOT EXISTS (
                 SELECT 1 FROM existing e
                 WHERE e.conversation_id = i.conversation_id AND e.sender_id = i.sender_id
                   AND e.client_msg_id = i.client_msg_id
             )
             ORDER BY conversation_id, sender_id, client_msg_id, ord
         ),
         numbered AS (
             SELECT *, row_number() OVER w AS n, count(*) OVER w AS total
             FROM fresh WINDOW w AS (PARTITION BY conversation_id ORDER BY ord
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
         ),
         next AS (
             UPDATE conversations c SET last_seq = c.last_seq + t.total, last_activity_at = now()
             FROM (SELECT DISTINCT conversation_id, total FROM numbered) t
             WHERE c.id = t.conversation_id
             RETURNING c.id, c.last_seq
         ),
         message AS (
             INSERT INTO messages (id, conversation_id, seq, sender_id, client_msg_id, body)
             SELECT n.id, n.conversation_id, next.last_seq - n.total + n.n, n.sender_id,
                    n.client_msg_id, n.body
             FROM numbered n JOIN next ON next.id = n.conversation_id
             RETURNING {MESSAGE_COLUMNS}
         ),
         read AS (
             UPDATE members SET read_seq = GREATEST(members.read_seq, r.seq)
             FROM (SELECT conversation_id, sender_id, max(seq) AS seq FROM message
                   GROUP BY conversation_id, sender_id) r
             WHERE members.conversation_id = r.conversation_id AND members.user_id = r.sender_id
         )
         SELECT i.ord, m.*, m.id = i.id AS created,
                CASE WHEN f.n = 1 THEN ARRAY(
                    SELECT user_id FROM members WHERE conversation_id = i.conversation_id ORDER BY user_id
                ) END AS member_ids
         FROM input i
         JOIN (SELECT * FROM message UNION ALL SELECT * FROM existing) m
           ON m.conversation_id = i.conversation_id AND m.sender_id = i.sender_id
          AND m.client_msg_id = i.client_msg_id
         LEFT JOIN numbered f ON f.id = i.id
         ORDER BY i.ord"
    )))
    .bind(&ids)
    .bind(&conversations)
    .bind(&senders)
    .bind(&client_msg_ids)
    .bind(&bodies)
    .fetch_all(&mut *conn)
    .await?;
    let answered = rows.iter().map(|row| row.ord).eq(1..=n as i64);
    if !answered {
        return Err(
            anyhow::anyhow!("the send statement did not answer each send once, in order").into(),
        );
    }
    Ok(rows.into_iter().map(|row| row.sent).collect())
}

/// [`insert_messages`] for one message, in a statement made for one.
async fn insert_message(conn: &mut PgConnection, message: &NewMessage) -> Result<SentRow, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH existing AS (
             SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE conversation_id = $2 AND sender_id = $3 AND client_msg_id = $4
         ),
         next AS (
             UPDATE conversations SET last_seq = last_seq + 1, last_activity_at = now()
             WHERE id = $2 AND NOT EXISTS (SELECT 1 FROM existing)
             RETURNING last_seq
         ),
         message AS (
             INSERT INTO messages (id, conversation_id, seq, sender_id, client_msg_id, body)
             SELECT $1, $2, next.last_seq, $3, $4, $5 FROM next
             RETURNING {MESSAGE_COLUMNS}
         ),
         read AS (
             UPDATE members SET read_seq = GREATEST(members.read_seq, message.seq) FROM message
             WHERE members.conversation_id = $2 AND members.user_id = $3
         )
         SELECT message.*, true AS created,
                ARRAY(SELECT user_id FROM members WHERE conversation_id = $2 ORDER BY user_id) AS member_ids
         FROM message
         UNION ALL
         SELECT existing.*, false AS created, NULL::uuid[] AS member_ids FROM existing"
    )))
    .bind(Uuid::now_v7())
    .bind(message.conversation)
    .bind(message.caller)
    .bind(message.client_msg_id.as_str())
    .bind(message.body.as_str())
    .fetch_one(&mut *conn)
    .await?)
}

/// A page of a conversation's messages, if `caller` is a member.
pub async fn history(
    pool: &PgPool,
    caller: Uuid,
    conversation: Uuid,
    page: Page,
    limit: i64,
) -> Result<Vec<MessageRow>, Error> {
    let mut conn = pool.acquire().await?;
    let member: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2)",
    )
    .bind(conversation)
    .bind(caller)
    .fetch_one(&mut *conn)
    .await?;
    if !member {
        return Err(Error::NotFound);
    }
    let (condition, order, bound) = match page {
        Page::After(after) => ("seq > $2", "ASC", after),
        Page::Before(before) => ("seq < $2", "DESC", before),
        Page::Newest => ("seq <= $2", "DESC", i64::MAX),
    };
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND {condition} ORDER BY seq {order} LIMIT $3"
    )))
    .bind(conversation)
    .bind(bound)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

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
    let member_rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT conversation_id, user_id FROM members WHERE conversation_id = ANY($1) ORDER BY conversation_id, user_id",
    )
    .bind(&conversation_ids)
    .fetch_all(&mut *conn)
    .await?;
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
                    row: row.conversation,
                },
            }
        })
        .collect())
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}
