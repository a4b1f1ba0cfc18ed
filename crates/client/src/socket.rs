//! The WebSocket half of the client: a session that survives reconnects.
//!
//! A background task owns the connection. It reads frames, keeps the highest seq handed out per
//! conversation (the cursor), drops any `(conversation_id, seq)` at or below it, and reports a
//! seq further ahead as a gap. When the connection breaks (a replica restarting closes with 1001,
//! a slow reader gets 1013, the network goes) it reconnects with backoff and sends `resume` with
//! every cursor, so the caller sees each message once, in order.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message as Frame, client::IntoClientRequest as _};

use crate::{Client, Error, Message};

/// What a [`Socket`] hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new message, never one handed out before.
    Message(Message),
    /// The replay asked for by a resume is complete for this conversation.
    Resumed {
        conversation_id: String,
        last_seq: i64,
    },
    /// Someone is typing.
    Typing {
        conversation_id: String,
        user_id: String,
    },
    /// A member's read position moved.
    Read {
        conversation_id: String,
        user_id: String,
        seq: i64,
    },
    /// A contact came online or went offline.
    Presence { user_id: String, online: bool },
    /// The server skipped seqs (it should not): `expected` was due, `got` came.
    Gap {
        conversation_id: String,
        expected: i64,
        got: i64,
    },
    /// The connection was (re)established; every tracked conversation is being resumed.
    Connected,
    /// The connection broke; the socket is reconnecting.
    Disconnected { code: Option<u16> },
}

enum Command {
    Typing(String),
    Track(String, i64),
}

/// A WebSocket session that reconnects and resumes by itself. Dropping it closes it.
#[derive(Debug)]
pub struct Socket {
    events: mpsc::Receiver<Event>,
    commands: mpsc::UnboundedSender<Command>,
    dropped: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Socket {
    /// Connects (the first connection must work) and starts the session.
    pub async fn connect(client: &Client) -> Result<Self, Error> {
        Self::connect_to(client, &client.socket_url()).await
    }

    /// Like [`Socket::connect`], but to this WebSocket URL (`ws://host:port/v1/ws`) instead of
    /// the server's: a delivery replica reached directly, as a load balancer would.
    pub async fn connect_to(client: &Client, url: &str) -> Result<Self, Error> {
        let stream = open(client, url).await?;
        let (events_tx, events) = mpsc::channel(1024);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let session = Session {
            client: client.clone(),
            url: url.to_owned(),
            events: events_tx,
            dropped: Arc::clone(&dropped),
        };
        let task = tokio::spawn(run(session, stream, commands_rx));
        Ok(Self {
            events,
            commands,
            dropped,
            task,
        })
    }

    /// How many message frames the server sent more than once (or after a later one), which
    /// the socket dropped instead of handing out.
    pub fn duplicates_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The next event; `None` once the session has ended for good (it was dropped, or the
    /// login cannot be renewed).
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Resumes `conversation_id` from `last_seq` now and after every reconnect: messages after it
    /// come, in order, then live ones.
    pub fn track(&self, conversation_id: &str, last_seq: i64) {
        let _ = self
            .commands
            .send(Command::Track(conversation_id.to_owned(), last_seq));
    }

    /// Tells the other members of a conversation that the user is typing.
    pub fn typing(&self, conversation_id: &str) {
        let _ = self
            .commands
            .send(Command::Typing(conversation_id.to_owned()));
    }
}

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(client: &Client, url: &str) -> Result<Stream, Error> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Error::Protocol(e.to_string()))?;
    let token = client.access_token()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| Error::Protocol("a token that is not a header value".into()))?,
    );
    let connector = tokio_tungstenite::Connector::Rustls(client.tls());
    match tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector))
        .await
    {
        Ok((stream, _)) => Ok(stream),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body: Value = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err(Error::Api {
                status: response.status().as_u16(),
                code: body["error"]["code"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned(),
                message: body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            })
        }
        Err(error) => Err(Error::Transport(error.to_string())),
    }
}

/// Per conversation: the highest seq handed out; how many frames were dropped as already seen;
/// and the conversations with a `resume` in flight, with the messages that came for them
/// meanwhile.
///
/// Until `resumed`, the server may push a live message before it reads the `resume` and replays
/// what comes before it (API.md promises order and no gaps only once `resumed` came). Handing
/// that message out at once would move the cursor past the replay, whose messages would then look
/// like duplicates and be dropped. So they wait, and leave in seq order with the replay.
#[derive(Default)]
struct Cursors(
    HashMap<String, i64>,
    Arc<AtomicU64>,
    HashMap<String, Vec<Message>>,
);

impl Cursors {
    /// Notes a `resume` sent for `conversation_id`.
    fn resuming(&mut self, conversation_id: &str) {
        self.2.entry(conversation_id.to_owned()).or_default();
    }

    /// A new connection: whatever waited on the old one comes again by its resume, which covers
    /// every tracked conversation.
    fn reconnected(&mut self) {
        self.2 = self.0.keys().map(|c| (c.clone(), Vec::new())).collect();
    }

    /// The messages that waited for `conversation_id`'s replay, now in order (duplicates and
    /// gaps handled as for any message).
    fn resumed(&mut self, conversation_id: &str) -> Vec<Event> {
        let mut waiting = self.2.remove(conversation_id).unwrap_or_default();
        waiting.sort_by_key(|m| m.seq);
        let mut events = Vec::with_capacity(waiting.len());
        for message in waiting {
            let mut gap = None;
            if self.admit(&message, &mut gap) {
                events.extend(gap);
                events.push(Event::Message(message));
            }
        }
        events
    }

    /// Whether a message is new; reports a gap through `gap`.
    fn admit(&mut self, message: &Message, gap: &mut Option<Event>) -> bool {
        match self.0.get_mut(&message.conversation_id) {
            Some(cursor) if message.seq <= *cursor => {
                self.1.fetch_add(1, Ordering::Relaxed);
                false
            }
            Some(cursor) => {
                if message.seq > *cursor + 1 {
                    *gap = Some(Event::Gap {
                        conversation_id: message.conversation_id.clone(),
                        expected: *cursor + 1,
                        got: message.seq,
                    });
                }
                // In place: no new key (and no allocation) per message.
                *cursor = message.seq;
                true
            }
            None => {
                self.0.insert(message.conversation_id.clone(), message.seq);
                true
            }
        }
    }

    fn resume_frame(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| json!({"type": "resume", "cursors": self.0}).to_string())
    }
}

/// What the background task needs to keep a session going.
struct Session {
    client: Client,
    url: String,
    events: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

async fn run(session: Session, mut stream: Stream, mut commands: mpsc::UnboundedReceiver<Command>) {
    let Session {
        client,
        url,
        events,
        dropped,
    } = session;
    let mut cursors = Cursors(HashMap::new(), dropped, HashMap::new());
    let mut attempt = 0u32;
    loop {
        if events.send(Event::Connected).await.is_err() {
            return;
        }
        cursors.reconnected();
        if let Some(resume) = cursors.resume_frame()
            && stream.send(Frame::text(resume)).await.is_err()
        {
            // Broken at once: fall through to reconnecting.
        }
        let code = serve(&mut stream, &mut cursors, &events, &mut commands).await;
        let Some(code) = code else {
            return; // the caller is gone
        };
        if events.send(Event::Disconnected { code }).await.is_err() {
            return;
        }
        // Reconnect with backoff; an expired token is refreshed first.
        stream = loop {
            attempt += 1;
            tokio::time::sleep(Duration::from_millis((100u64 << attempt.min(6)).min(5_000))).await;
            match open(&client, &url).await {
                Ok(stream) => {
                    attempt = 0;
                    break stream;
                }
                Err(error) if error.code() == Some("token_expired") || code == Some(1008) => {
                    if client.refresh().await.is_err() {
                        return;
                    }
                }
                Err(Error::Api { status: 401, .. }) => return,
                Err(error) => tracing::debug!(%error, "reconnecting"),
            }
        };
    }
}

/// Serves one connection; returns its close code when it ends, `None` if the caller is gone.
async fn serve(
    stream: &mut Stream,
    cursors: &mut Cursors,
    events: &mpsc::Sender<Event>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Option<Option<u16>> {
    let mut ping = tokio::time::interval(Duration::from_secs(25));
    ping.reset();
    loop {
        tokio::select! {
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Frame::Text(text))) => text,
                    Some(Ok(Frame::Close(close))) => return Some(close.map(|c| u16::from(c.code))),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Some(None),
                };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                for event in interpret(&value, cursors) {
                    if events.send(event).await.is_err() {
                        return None;
                    }
                }
            }
            command = commands.recv() => {
                let frame = match command {
                    None => return None,
                    Some(Command::Typing(conversation)) => {
                        json!({"type": "typing", "conversation_id": conversation})
                    }
                    Some(Command::Track(conversation, last_seq)) => {
                        let cursor = cursors.0.entry(conversation.clone()).or_insert(last_seq);
                        *cursor = (*cursor).max(last_seq);
                        let frame = json!({"type": "resume", "cursors": {&conversation: *cursor}});
                        cursors.resuming(&conversation);
                        frame
                    }
                };
                if stream.send(Frame::text(frame.to_string())).await.is_err() {
                    return Some(None);
                }
            }
            _ = ping.tick() => {
                if stream.send(Frame::text(r#"{"type":"ping"}"#)).await.is_err() {
                    return Some(None);
                }
            }
        }
    }
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_owned()
}

/// Turns a server frame into events, applying the cursors.
fn interpret(frame: &Value, cursors: &mut Cursors) -> Vec<Event> {
    match frame["type"].as_str() {
        Some("message") => {
            let Ok(message) = serde_json::from_value::<Message>(frame["message"].clone()) else {
                return Vec::new();
            };
            if let Some(waiting) = cursors.2.get_mut(&message.conversation_id) {
                waiting.push(message);
                return Vec::new();
            }
            let mut gap = None;
            if !cursors.admit(&message, &mut gap) {
                return Vec::new();
            }
            gap.into_iter().chain([Event::Message(message)]).collect()
        }
        Some("resumed") => {
            let conversation_id = text(frame, "conversation_id");
            let mut events = cursors.resumed(&conversation_id);
            events.push(Event::Resumed {
                conversation_id,
                last_seq: frame["last_seq"].as_i64().unwrap_or_default(),
            });
            events
        }
        Some("typing") => vec![Event::Typing {
            conversation_id: text(frame, "conversation_id"),
            user_id: text(frame, "user_id"),
        }],
        Some("read") => vec![Event::Read {
            conversation_id: text(frame, "conversation_id"),
            user_id: text(frame, "user_id"),
            seq: frame["seq"].as_i64().unwrap_or_default(),
        }],
        Some("presence") => vec![Event::Presence {
            user_id: text(frame, "user_id"),
            online: frame["status"] == "online",
        }],
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn message(seq: i64) -> Value {
        json!({"type": "message", "message": {"id": format!("m{seq}"), "conversation_id": "c",
            "seq": seq, "sender_id": "s", "client_msg_id": "k", "body": "b",
            "created_at": "2026-11-27T00:00:00.000Z"}})
    }

    #[test]
    fn duplicates_are_dropped_and_gaps_reported() {
        let mut cursors = Cursors::default();
        assert_eq!(interpret(&message(1), &mut cursors).len(), 1);
        assert!(interpret(&message(1), &mut cursors).is_empty());
        assert_eq!(cursors.1.load(Ordering::Relaxed), 1);
        let events = interpret(&message(4), &mut cursors);
        assert!(matches!(
            &events[0],
            Event::Gap {
                expected: 2,
                got: 4,
                ..
            }
        ));
        assert!(matches!(&events[1], Event::Message(m) if m.seq == 4));
        assert!(interpret(&message(3), &mut cursors).is_empty());
        assert_eq!(
            cursors.resume_frame().unwrap(),
            r#"{"cursors":{"c":4},"type":"resume"}"#
        );
    }

    fn seqs(events: &[Event]) -> Vec<i64> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_live_message_ahead_of_a_replay_waits_for_it() {
        // Tracked from 0, but the server pushed seq 4 live before it read the resume, then
        // replayed 1 to 4.
        let mut cursors = Cursors::default();
        cursors.0.insert("c".into(), 0);
        cursors.resuming("c");
        let mut events = Vec::new();
        for seq in [4, 1, 2, 3, 4] {
            events.extend(interpret(&message(seq), &mut cursors));
        }
        assert!(events.is_empty(), "nothing leaves before `resumed`");
        let resumed = json!({"type": "resumed", "conversation_id": "c", "last_seq": 4});
        let events = interpret(&resumed, &mut cursors);
        assert_eq!(seqs(&events), [1, 2, 3, 4]);
        assert!(!events.iter().any(|e| matches!(e, Event::Gap { .. })));
        assert!(matches!(
            events.last(),
            Some(Event::Resumed { last_seq: 4, .. })
        ));
        assert_eq!(cursors.1.load(Ordering::Relaxed), 1, "the second 4");
        // Then live again, at once.
        assert_eq!(seqs(&interpret(&message(5), &mut cursors)), [5]);
    }

    #[test]
    fn a_replay_that_still_misses_seqs_reports_the_gap() {
        let mut cursors = Cursors::default();
        cursors.0.insert("c".into(), 0);
        cursors.reconnected();
        for seq in [3, 1] {
            assert!(interpret(&message(seq), &mut cursors).is_empty());
        }
        let resumed = json!({"type": "resumed", "conversation_id": "c", "last_seq": 3});
        let events = interpret(&resumed, &mut cursors);
        assert_eq!(seqs(&events), [1, 3]);
        assert!(matches!(
            &events[1],
            Event::Gap {
                expected: 2,
                got: 3,
                ..
            }
        ));
    }
}
