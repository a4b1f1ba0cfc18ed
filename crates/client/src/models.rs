//! The API's values as the client hands them out (API.md's shapes).

use serde::{Deserialize, Serialize};

/// The tokens of a login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub user_id: String,
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct User {
    pub user_id: String,
    pub username: String,
}

/// A profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Profile {
    pub user_id: String,
    pub username: String,
    pub display_name: String,
    pub bio: Option<String>,
    pub avatar_url: Option<String>,
    pub updated_at: String,
}

/// Changes to one's profile: `None` leaves a field, `Some(None)` clears it (a display name can
/// only be changed, not cleared).
#[derive(Debug, Clone, Default)]
pub struct ProfileEdit {
    pub display_name: Option<String>,
    pub bio: Option<Option<String>>,
    pub avatar_url: Option<Option<String>>,
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub kind: String,
    pub title: Option<String>,
    /// Every member, except in a list of conversations: the first 100 there.
    pub member_ids: Vec<String>,
    /// How many members it has (absent from servers before it was added).
    #[serde(default)]
    pub member_count: Option<u32>,
    pub created_at: String,
    pub last_seq: i64,
}

/// A conversation in one's list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConversationSummary {
    #[serde(flatten)]
    pub conversation: Conversation,
    pub unread_count: i64,
    pub last_message: Option<Message>,
}

/// A message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub sender_id: String,
    pub client_msg_id: String,
    pub body: String,
    pub created_at: String,
}

/// Someone's presence.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Presence {
    pub user_id: String,
    pub status: String,
    pub last_seen: Option<String>,
}
