//! The messaging database: every query the service makes.
//!
//! Every change that other services must hear about writes its event with
//! [`realchat_outbox::enqueue`] in the same transaction. Changes within one conversation first lock
//! the conversation's row, which serialises them: that is what makes `seq` gapless and
//! commit-ordered, makes the idempotency check of a send race-free, and gives the outbox its
//! per-conversation order.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Error;

mod conversations;
mod history;
mod reads;
mod sends;
mod users;

pub use conversations::{add_member, conversation, create, list, members_page, remove_member};
pub use history::history;
pub use reads::mark_read;
pub use sends::{NewMessage, Sent, send, send_all};
pub use users::{remember_user, shared_with, unknown_users};

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
    /// Its members by id: all of them, or in a list the first [`LISTED_MEMBERS`].
    pub members: Vec<Uuid>,
    /// How many members it has.
    pub member_count: i64,
}

impl Conversation {
    /// A conversation with every member.
    pub fn whole(row: ConversationRow, members: Vec<Uuid>) -> Self {
        Self {
            row,
            member_count: members.len() as i64,
            members,
        }
    }
}

/// Members a conversation list carries per conversation, at most: enough for what a list shows
/// and for delivery to know the contacts in groups small enough for presence; the rest is paged
/// with [`members_page`].
pub const LISTED_MEMBERS: i64 = 100;

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

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}
