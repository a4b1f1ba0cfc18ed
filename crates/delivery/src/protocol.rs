//! The WebSocket protocol of API.md: the frames, as JSON, and the close codes.
//!
//! Server frames that go to many sockets (a message to a group) are rendered once and shared:
//! [`Utf8Bytes`] clones are reference counts, not copies.

use std::{collections::HashMap, time::Duration};

use axum::extract::ws::Utf8Bytes;
use realchat_proto::{events::v1::MessageCreated, messaging::v1::Message};
use realchat_runtime::format::timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Largest frame (and message) a client may send: 64 KiB. Bigger closes with [`close::TOO_BIG`].
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Most conversations one `resume` may name.
pub const MAX_RESUME_CURSORS: usize = 1000;

/// WebSocket close codes the server uses.
pub mod close {
    /// Normal closure (idle timeout).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down: reconnect and resume.
    pub const GOING_AWAY: u16 = 1001;
    /// Policy violation: the access token expired.
    pub const POLICY: u16 = 1008;
    /// A frame over 64 KiB.
    pub const TOO_BIG: u16 = 1009;
    /// The server could not keep this socket consistent (history unavailable for a gap).
    pub const INTERNAL: u16 = 1011;
    /// The client read too slowly and fell too far behind: reconnect and resume.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Replay every message after each cursor, then continue live.
    Resume { cursors: HashMap<Uuid, i64> },
    /// Tell the other members the sender is typing.
    Typing { conversation_id: Uuid },
    /// Keep-alive.
    Ping,
}

/// Why a client frame was refused, as an `error` frame's `code` and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
    /// With `rate_limited`: milliseconds to wait before sending again.
    pub retry_after_ms: Option<u64>,
}

impl FrameError {
    /// `invalid_argument` with a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: "invalid_argument",
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// `rate_limited`: the socket sends faster than its budget; `retry_after` says when to send
    /// again.
    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            code: "rate_limited",
            message: message.into(),
            retry_after_ms: Some(
                u64::try_from(retry_after.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            ),
        }
    }

    /// `not_found` for a conversation the caller cannot see.
    pub fn not_found(conversation: Uuid) -> Self {
        Self {
            code: "not_found",
            message: format!("conversation {conversation} not found"),
            retry_after_ms: None,
        }
    }
}

impl ClientFrame {
    /// Parses a text frame: bad JSON is `malformed_json`, a wrong shape `invalid_argument`.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| FrameError {
            code: "malformed_json",
            message: format!("the frame is not JSON: {e}"),
            retry_after_ms: None,
        })?;
        let frame: Self = serde_json::from_value(value).map_err(|e| {
            FrameError::invalid(format!(
                "expected a resume, typing or ping frame as in API.md: {e}"
            ))
        })?;
        if let Self::Resume { cursors } = &frame {
            if cursors.len() > MAX_RESUME_CURSORS {
                return Err(FrameError::invalid(format!(
                    "resume names at most {MAX_RESUME_CURSORS} conversations"
                )));
            }
            if let Some((conversation, _)) = cursors.iter().find(|(_, seq)| **seq < 0) {
                return Err(FrameError::invalid(format!(
                    "the cursor of {conversation} must be 0 or more"
                )));
            }
        }
        Ok(frame)
    }
}

/// A message as API.md shows it.
#[derive(Debug, Serialize)]
struct MessageView<'a> {
    id: &'a str,
    conversation_id: &'a str,
    seq: i64,
    sender_id: &'a str,
    client_msg_id: &'a str,
    body: &'a str,
    created_at: String,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    Ready {
        session_id: &'a str,
        user_id: &'a str,
    },
    Message {
        message: MessageView<'a>,
    },
    Resumed {
        conversation_id: &'a str,
        last_seq: i64,
    },
    Typing {
        conversation_id: &'a str,
        user_id: &'a str,
    },
    Read {
        conversation_id: &'a str,
        user_id: &'a str,
        seq: i64,
    },
    Presence {
        user_id: &'a str,
        status: &'a str,
    },
    Pong,
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

fn render(frame: &ServerFrame<'_>) -> Utf8Bytes {
    // Serialising these types cannot fail: string keys, no maps with non-string keys.
    Utf8Bytes::from(serde_json::to_string(frame).unwrap_or_default())
}

/// `{"type": "ready", ...}`
pub fn ready(session_id: &str, user_id: Uuid) -> Utf8Bytes {
    render(&ServerFrame::Ready {
        session_id,
        user_id: &user_id.to_string(),
    })
}

/// `{"type": "message", ...}` from the event.
pub fn message_from_event(m: &MessageCreated) -> Utf8Bytes {
    render(&ServerFrame::Message {
        message: MessageView {
            id: &m.message_id,
            conversation_id: &m.conversation_id,
            seq: m.seq,
            sender_id: &m.sender_id,
            client_msg_id: &m.client_msg_id,
            body: &m.body,
            created_at: timestamp(m.created_at_ms),
        },
    })
}

/// `{"type": "message", ...}` from history.
pub fn message_from_history(m: &Message) -> Utf8Bytes {
    render(&ServerFrame::Message {
        message: MessageView {
            id: &m.id,
            conversation_id: &m.conversation_id,
            seq: m.seq,
            sender_id: &m.sender_id,
            client_msg_id: &m.client_msg_id,
            body: &m.body,
            created_at: timestamp(m.created_at_ms),
        },
    })
}

/// `{"type": "resumed", ...}`
pub fn resumed(conversation: Uuid, last_seq: i64) -> Utf8Bytes {
    render(&ServerFrame::Resumed {
        conversation_id: &conversation.to_string(),
        last_seq,
    })
}

/// `{"type": "typing", ...}`
pub fn typing(conversation: &str, user: &str) -> Utf8Bytes {
    render(&ServerFrame::Typing {
        conversation_id: conversation,
        user_id: user,
    })
}

/// `{"type": "read", ...}`
pub fn read(conversation: &str, user: &str, seq: i64) -> Utf8Bytes {
    render(&ServerFrame::Read {
        conversation_id: conversation,
        user_id: user,
        seq,
    })
}

/// `{"type": "presence", ...}`
pub fn presence(user: &str, online: bool) -> Utf8Bytes {
    render(&ServerFrame::Presence {
        user_id: user,
        status: if online { "online" } else { "offline" },
    })
}

/// `{"type": "pong"}`
pub fn pong() -> Utf8Bytes {
    render(&ServerFrame::Pong)
}

/// `{"type": "error", ...}`
pub fn error(error: &FrameError) -> Utf8Bytes {
    render(&ServerFrame::Error {
        code: error.code,
        message: &error.message,
        retry_after_ms: error.retry_after_ms,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse_and_bad_ones_say_why() {
        let id = Uuid::now_v7();
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping)
        );
        assert_eq!(
            ClientFrame::parse(&format!(r#"{{"type":"resume","cursors":{{"{id}":4}}}}"#)),
            Ok(ClientFrame::Resume {
                cursors: HashMap::from([(id, 4)])
            })
        );
        assert_eq!(
            ClientFrame::parse("{nope").unwrap_err().code,
            "malformed_json"
        );
        for bad in [
            r#"{"type":"shout"}"#,
            r#"{"type":"typing"}"#,
            r#"{"type":"typing","conversation_id":"x"}"#,
            r#"{"type":"resume","cursors":{"not-a-uuid":1}}"#,
            r#"[1,2]"#,
        ] {
            assert_eq!(
                ClientFrame::parse(bad).unwrap_err().code,
                "invalid_argument",
                "{bad}"
            );
        }
        let negative = format!(r#"{{"type":"resume","cursors":{{"{id}":-1}}}}"#);
        assert_eq!(
            ClientFrame::parse(&negative).unwrap_err().code,
            "invalid_argument"
        );
    }

    #[test]
    fn server_frames_have_the_api_shape() {
        let frame: serde_json::Value =
            serde_json::from_str(presence("u1", false).as_str()).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"type": "presence", "user_id": "u1", "status": "offline"})
        );
        let frame: serde_json::Value = serde_json::from_str(pong().as_str()).unwrap();
        assert_eq!(frame, serde_json::json!({"type": "pong"}));
        let event = MessageCreated {
            message_id: "m".into(),
            conversation_id: "c".into(),
            seq: 3,
            sender_id: "s".into(),
            client_msg_id: "k".into(),
            body: "hi".into(),
            created_at_ms: 0,
            member_ids: vec![],
        };
        let frame: serde_json::Value =
            serde_json::from_str(message_from_event(&event).as_str()).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"type": "message", "message": {
                "id": "m", "conversation_id": "c", "seq": 3, "sender_id": "s",
                "client_msg_id": "k", "body": "hi", "created_at": "1970-01-01T00:00:00.000Z"}})
        );
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::*;

        /// Values shaped like client frames: the right keys and types often, anything else too.
        fn frame_like() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| json!(f)),
                any::<String>().prop_map(Value::from),
                Just(json!(Uuid::nil().to_string())),
                Just(json!(Uuid::now_v7().to_string())),
            ];
            let value = leaf.prop_recursive(3, 24, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::hash_map(
                        prop_oneof![any::<String>(), Just(Uuid::now_v7().to_string())],
                        inner,
                        0..4,
                    )
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            });
            let kind = prop_oneof![
                Just(json!("resume")),
                Just(json!("typing")),
                Just(json!("ping")),
                value.clone(),
            ];
            (kind, value.clone(), value.clone(), value).prop_map(
                |(kind, cursors, conversation, extra)| {
                    json!({"type": kind, "cursors": cursors, "conversation_id": conversation, "x": extra})
                },
            )
        }

        fn refused_as_documented(text: &str) -> Result<(), TestCaseError> {
            if let Err(error) = ClientFrame::parse(text) {
                prop_assert!(
                    ["malformed_json", "invalid_argument"].contains(&error.code),
                    "{} for {text:?}",
                    error.code
                );
                prop_assert!(!error.message.is_empty());
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn any_text_parses_or_is_refused_with_a_documented_code(text in any::<String>()) {
                refused_as_documented(&text)?;
            }

            #[test]
            fn frame_shaped_json_parses_or_is_refused_with_a_documented_code(frame in frame_like()) {
                refused_as_documented(&frame.to_string())?;
            }

            #[test]
            fn a_resume_within_the_rules_always_parses(
                cursors in prop::collection::hash_map(any::<u128>(), 0..i64::MAX, 0..64),
            ) {
                let cursors: HashMap<Uuid, i64> =
                    cursors.into_iter().map(|(id, seq)| (Uuid::from_u128(id), seq)).collect();
                let text = json!({"type": "resume", "cursors": cursors}).to_string();
                prop_assert_eq!(ClientFrame::parse(&text), Ok(ClientFrame::Resume { cursors }));
            }
        }
    }
}
