//! The JSON shapes of API.md's resources, built from the services' protobuf messages.

use realchat_proto::messaging::v1 as pb;
use realchat_runtime::format::timestamp;
use serde::Serialize;
use utoipa::ToSchema;

/// A conversation.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConversationView {
    #[schema(format = Uuid)]
    id: String,
    /// `direct` or `group`.
    kind: String,
    title: Option<String>,
    /// The members by id: every one, except in the list of conversations, which shows the first
    /// 100 (`GET /v1/conversations/{id}/members` pages through them all).
    member_ids: Vec<String>,
    /// How many members it has.
    member_count: u32,
    #[schema(format = DateTime)]
    created_at: String,
    /// The seq of the newest message, 0 when there is none.
    last_seq: i64,
}

impl From<pb::Conversation> for ConversationView {
    fn from(c: pb::Conversation) -> Self {
        Self {
            id: c.id,
            kind: c.kind,
            title: c.has_title.then_some(c.title),
            member_count: c.member_count,
            member_ids: c.member_ids,
            created_at: timestamp(c.created_at_ms),
            last_seq: c.last_seq,
        }
    }
}

/// A conversation in the caller's list.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConversationSummaryView {
    #[serde(flatten)]
    conversation: ConversationView,
    /// Messages after the caller's read position (their own sends count as read).
    unread_count: i64,
    last_message: Option<MessageView>,
}

impl From<pb::ConversationSummary> for ConversationSummaryView {
    fn from(s: pb::ConversationSummary) -> Self {
        Self {
            conversation: s.conversation.unwrap_or_default().into(),
            unread_count: s.unread_count,
            last_message: s.last_message.map(Into::into),
        }
    }
}

/// A message.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessageView {
    #[schema(format = Uuid)]
    id: String,
    #[schema(format = Uuid)]
    conversation_id: String,
    /// 1, 2, 3, ... per conversation, no gaps, in commit order.
    seq: i64,
    #[schema(format = Uuid)]
    sender_id: String,
    client_msg_id: String,
    body: String,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<pb::Message> for MessageView {
    fn from(m: pb::Message) -> Self {
        Self {
            id: m.id,
            conversation_id: m.conversation_id,
            seq: m.seq,
            sender_id: m.sender_id,
            client_msg_id: m.client_msg_id,
            body: m.body,
            created_at: timestamp(m.created_at_ms),
        }
    }
}
