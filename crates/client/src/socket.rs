//! The WebSocket half of the client: a session that survives reconnects.
//!
//! A background task owns the connection. It reads frames, keeps the highest seq handed out per
//! conversation (the cursor), drops any `(conversation_id, seq)` at or below it, and reports a
//! seq further ahead as a gap. When the connection breaks (a replica restarting closes with 1001,
//! a slow reader gets 1013, the network goes, or the server stops answering pings) it reconnects
//! with jittered backoff and sends `resume` with every cursor, so the caller sees each message
//! once, in order.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
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
    /// The server skipped seqs (it should not): `expected` up to `got - 1` never came, either
    /// because `got` came when `expected` was due, or because a replay ended at `got - 1`.
    Gap {
        conversation_id: String,
        expected: i64,
        got: i64,
    },
    /// The server refused a frame (a `resume` or `typing` for a conversation the user is not
    /// in answers `not_found`); the socket stays open.
    Error { code: String, message: String },
    /// The connection was (re)established; every tracked conversation is being resumed.
    Connected,
    /// The connection broke; the socket is reconnecting.
    Disconnected { code: Option<u16> },
}

enum Command {
    Typing(String),
    Track(String, i64),
}

/// How often a quiet connection is pinged.
const PING_INTERVAL: Duration = Duration::from_secs(25);

/// A connection that has sent nothing (not even a `pong`) for this long is taken for dead and
/// replaced: a half-open TCP connection would otherwise hang until the kernel gives up on it.
const SILENCE_LIMIT: Duration = Duration::from_secs(60);

/// Counts of what the server sent that the socket did not hand out.
#[derive(Debug, Default)]
struct Counters {
    /// Frames of messages already handed out.
    duplicates: AtomicU64,
    /// Frames of messages the socket had reported missing (in a [`Event::Gap`]), arriving after
    /// a later one: out of order.
    late: AtomicU64,
}

/// A WebSocket session that reconnects and resumes by itself. Dropping it closes it.
#[derive(Debug)]
pub struct Socket {
    events: mpsc::Receiver<Event>,
    commands: mpsc::UnboundedSender<Command>,
    counters: Arc<Counters>,
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
        let token = client.access_token()?;
        let stream = match open(client, url, &token).await {
            Err(Error::Api { status: 401, .. }) => {
                let token = client.renew(&token).await?.access_token;
                open(client, url, &token).await?
            }
            other => other?,
        };
        let (events_tx, events) = mpsc::channel(1024);
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let session = Session {
            client: client.clone(),
            url: url.to_owned(),
            events: events_tx,
            counters: Arc::clone(&counters),
        };
        let task = tokio::spawn(run(session, stream, commands_rx));
        Ok(Self {
            events,
            commands,
            counters,
            task,
        })
    }

    /// How many message frames the server sent again after the socket had handed the message
    /// out (at least once delivery allows that), which the socket dropped.
    pub fn duplicates_dropped(&self) -> u64 {
        self.counters.duplicates.load(Ordering::Relaxed)
    }

    /// How many message frames came after a later message of their conversation, filling a gap
    /// the socket had already reported (the server broke per-conversation order). They are
    /// dropped: the caller was told of the gap, and history has them.
    pub fn late_dropped(&self) -> u64 {
        self.counters.late.load(Ordering::Relaxed)
    }

    /// The next event; `None` once the session has ended for good (it was dropped, or the
    /// login cannot be renewed).
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Resumes `conversation_id` from `last_seq` now and after every reconnect: messages after it
    /// come, in order, then live ones. The id must be a UUID and `last_seq` at least 0: the
    /// server refuses a whole `resume` frame with anything else in it, which would stall every
    /// conversation resumed with it.
    pub fn track(&self, conversation_id: &str, last_seq: i64) -> Result<(), Error> {
        if uuid::Uuid::parse_str(conversation_id).is_err() {
            return Err(Error::Invalid(format!(
                "{conversation_id:?} is not a conversation id"
            )));
        }
        if last_seq < 0 {
            return Err(Error::Invalid(format!(
                "a negative seq ({last_seq}) to resume from"
            )));
        }
        let _ = self
            .commands
            .send(Command::Track(conversation_id.to_owned(), last_seq));
        Ok(())
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

/// Opens a connection with the access token `token`.
async fn open(client: &Client, url: &str, token: &str) -> Result<Stream, Error> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Error::Protocol(e.to_string()))?;
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
            let body = response.body().as_deref().unwrap_or_default();
            Err(Error::from_answer(
                response.status().as_u16(),
                body,
                crate::error::retry_after(response.headers()),
            ))
        }
        Err(error) => Err(Error::Transport(error.into())),
    }
}

/// How long messages of a conversation wait for the `resumed` of its replay; past it, the resume
/// is taken as refused and they are handed out.
const RESUME_WAIT: Duration = Duration::from_secs(10);

/// Gaps remembered per conversation, to tell a late message from a duplicate.
const MISSING_RANGES: usize = 64;

/// What the session knows per conversation.
///
/// Until `resumed`, the server may push a live message before it reads the `resume` and replays
/// what comes before it (API.md promises order and no gaps only once `resumed` came). Handing
/// that message out at once would move the cursor past the replay, whose messages would then look
/// like duplicates and be dropped. So they wait, and leave in seq order with the replay.
#[derive(Default)]
struct Cursors {
    /// The highest seq handed out.
    handed: HashMap<String, i64>,
    /// The conversations with a `resume` in flight, with when it was sent and the messages that
    /// came for them meanwhile.
    waiting: HashMap<String, (Instant, Vec<Message>)>,
    /// Seqs reported missing, as `[from, to)` ranges.
    missing: HashMap<String, Vec<(i64, i64)>>,
    counters: Arc<Counters>,
}

impl Cursors {
    fn new(counters: Arc<Counters>) -> Self {
        Self {
            counters,
            ..Self::default()
        }
    }

    /// Notes a `resume` sent for `conversation_id`.
    fn resuming(&mut self, conversation_id: &str) {
        self.waiting
            .entry(conversation_id.to_owned())
            .or_insert_with(|| (Instant::now(), Vec::new()));
    }

    /// A new connection: whatever waited on the old one comes again by its resume, which covers
    /// every tracked conversation.
    fn reconnected(&mut self) {
        let now = Instant::now();
        self.waiting = self
            .handed
            .keys()
            .map(|c| (c.clone(), (now, Vec::new())))
            .collect();
    }

    /// The messages that waited for `conversation_id`'s replay, now in order (duplicates and
    /// gaps handled as for any message), and a gap if the replay ended past them.
    fn resumed(&mut self, conversation_id: &str, last_seq: i64) -> Vec<Event> {
        let mut waiting = self
            .waiting
            .remove(conversation_id)
            .map(|(_, waiting)| waiting)
            .unwrap_or_default();
        waiting.sort_by_key(|m| m.seq);
        let mut events = Vec::with_capacity(waiting.len() + 1);
        for message in waiting {
            let mut gap = None;
            if self.admit(&message, &mut gap) {
                events.extend(gap);
                events.push(Event::Message(message));
            }
        }
        if let Some(cursor) = self.handed.get_mut(conversation_id)
            && last_seq > *cursor
        {
            let (expected, got) = (*cursor + 1, last_seq + 1);
            *cursor = last_seq;
            events.push(self.gap(conversation_id, expected, got));
        }
        events
    }

    /// Reports `[expected, got)` missing, and remembers it.
    fn gap(&mut self, conversation_id: &str, expected: i64, got: i64) -> Event {
        let ranges = self.missing.entry(conversation_id.to_owned()).or_default();
        if ranges.len() == MISSING_RANGES {
            ranges.remove(0);
        }
        ranges.push((expected, got));
        Event::Gap {
            conversation_id: conversation_id.to_owned(),
            expected,
            got,
        }
    }

    /// Whether `seq` was reported missing; it no longer is.
    fn came_late(&mut self, conversation_id: &str, seq: i64) -> bool {
        let Some(ranges) = self.missing.get_mut(conversation_id) else {
            return false;
        };
        let Some(i) = ranges
            .iter()
            .position(|(from, to)| (*from..*to).contains(&seq))
        else {
            return false;
        };
        let (from, to) = ranges.swap_remove(i);
        ranges.extend(
            [(from, seq), (seq + 1, to)]
                .into_iter()
                .filter(|(a, b)| a < b),
        );
        true
    }

    /// Whether a message is new; reports a gap through `gap`.
    fn admit(&mut self, message: &Message, gap: &mut Option<Event>) -> bool {
        let conversation = &message.conversation_id;
        match self.handed.get_mut(conversation) {
            Some(cursor) if message.seq <= *cursor => {
                let counter = if self.came_late(conversation, message.seq) {
                    &self.counters.late
                } else {
                    &self.counters.duplicates
                };
                counter.fetch_add(1, Ordering::Relaxed);
                false
            }
            Some(cursor) => {
                let expected = *cursor + 1;
                // In place: no new key (and no allocation) per message.
                *cursor = message.seq;
                if message.seq > expected {
                    *gap = Some(self.gap(conversation, expected, message.seq));
                }
                true
            }
            None => {
                self.handed.insert(conversation.clone(), message.seq);
                true
            }
        }
    }

    fn resume_frame(&self) -> Option<String> {
        (!self.handed.is_empty())
            .then(|| json!({"type": "resume", "cursors": self.handed}).to_string())
    }
}

/// What the background task needs to keep a session going.
struct Session {
    client: Client,
    url: String,
    events: mpsc::Sender<Event>,
    counters: Arc<Counters>,
}

/// Waits before reconnect attempts: doubling from 200 ms to 5 s, each between half and all of
/// that, so sockets dropped together do not all come back together.
const RECONNECT: realchat_backoff::Backoff =
    realchat_backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// The wait before reconnect attempt `attempt` (from 1).
fn backoff(attempt: u32) -> Duration {
    RECONNECT.delay(attempt)
}

async fn run(session: Session, mut stream: Stream, mut commands: mpsc::UnboundedReceiver<Command>) {
    let Session {
        client,
        url,
        events,
        counters,
    } = session;
    let mut cursors = Cursors::new(counters);
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
        // Reconnect with backoff. A refused token (it expired: the server closed with 1008, or
        // the upgrade got 401) is renewed once; refused again, or not renewable, the login is
        // over and so is the session.
        let mut renewed = false;
        stream = loop {
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
            let Ok(token) = client.access_token() else {
                return;
            };
            match open(&client, &url, &token).await {
                Ok(stream) => {
                    attempt = 0;
                    break stream;
                }
                Err(Error::Api { status: 401, .. }) if !renewed => {
                    match client.renew(&token).await {
                        Ok(_) => renewed = true,
                        Err(error) if error.is_transient() => {
                            tracing::debug!(%error, "renewing the token to reconnect");
                        }
                        Err(_) => return,
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
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.reset();
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            frame = stream.next() => {
                heard = Instant::now();
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
                        let cursor = cursors.handed.entry(conversation.clone()).or_insert(last_seq);
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
                if heard.elapsed() > SILENCE_LIMIT {
                    tracing::debug!("no frame, not even a pong, for {SILENCE_LIMIT:?}: reconnecting");
                    return Some(None);
                }
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
            let mut events = Vec::new();
            if let Some((since, waiting)) = cursors.waiting.get_mut(&message.conversation_id) {
                if since.elapsed() < RESUME_WAIT {
                    waiting.push(message);
                    return events;
                }
                // No `resumed` came (the server refused the resume: the user had left the
                // conversation, say, and has been added back): stop holding its messages.
                events = cursors.resumed(&message.conversation_id, i64::MIN);
            }
            let mut gap = None;
            if !cursors.admit(&message, &mut gap) {
                return events;
            }
            events.extend(gap);
            events.push(Event::Message(message));
            events
        }
        Some("resumed") => {
            let conversation_id = text(frame, "conversation_id");
            let last_seq = frame["last_seq"].as_i64().unwrap_or_default();
            let mut events = cursors.resumed(&conversation_id, last_seq);
            events.push(Event::Resumed {
                conversation_id,
                last_seq,
            });
            events
        }
        Some("error") => vec![Event::Error {
            code: text(frame, "code"),
            message: text(frame, "message"),
        }],
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
        assert_eq!(cursors.counters.duplicates.load(Ordering::Relaxed), 1);
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
            cursors.counters.late.load(Ordering::Relaxed),
            1,
            "3 was reported missing"
        );
        assert!(interpret(&message(3), &mut cursors).is_empty());
        assert_eq!(
            cursors.counters.duplicates.load(Ordering::Relaxed),
            2,
            "3 again"
        );
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
        cursors.handed.insert("c".into(), 0);
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
        assert_eq!(
            cursors.counters.duplicates.load(Ordering::Relaxed),
            1,
            "the second 4"
        );
        // Then live again, at once.
        assert_eq!(seqs(&interpret(&message(5), &mut cursors)), [5]);
    }

    #[test]
    fn a_replay_that_still_misses_seqs_reports_the_gap() {
        let mut cursors = Cursors::default();
        cursors.handed.insert("c".into(), 0);
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

    #[test]
    fn a_replay_that_ends_past_what_came_reports_the_rest_missing_once() {
        let mut cursors = Cursors::default();
        cursors.handed.insert("c".into(), 0);
        cursors.reconnected();
        assert!(interpret(&message(1), &mut cursors).is_empty());
        let resumed = json!({"type": "resumed", "conversation_id": "c", "last_seq": 3});
        let events = interpret(&resumed, &mut cursors);
        assert!(matches!(&events[0], Event::Message(m) if m.seq == 1));
        assert!(matches!(
            &events[1],
            Event::Gap {
                expected: 2,
                got: 4,
                ..
            }
        ));
        // The next live message follows the replay's end: no second gap.
        let events = interpret(&message(4), &mut cursors);
        assert!(matches!(&events[..], [Event::Message(m)] if m.seq == 4));
        // 2 arriving now is late, not a duplicate.
        assert!(interpret(&message(2), &mut cursors).is_empty());
        assert_eq!(cursors.counters.late.load(Ordering::Relaxed), 1);
        assert_eq!(cursors.counters.duplicates.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn error_frames_are_handed_out() {
        let mut cursors = Cursors::default();
        let frame =
            json!({"type": "error", "code": "not_found", "message": "conversation x not found"});
        assert_eq!(
            interpret(&frame, &mut cursors),
            [Event::Error {
                code: "not_found".into(),
                message: "conversation x not found".into()
            }]
        );
    }

    #[test]
    fn backoff_doubles_to_five_seconds_with_jitter_below_each_step() {
        for attempt in 1..20 {
            let ceiling = Duration::from_millis((100u64 << attempt.clamp(1, 6)).min(5_000));
            let wait = backoff(attempt);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{attempt}: {wait:?}"
            );
        }
    }

    #[test]
    fn messages_stop_waiting_for_a_resumed_that_never_comes() {
        let mut cursors = Cursors::default();
        cursors.handed.insert("c".into(), 3);
        cursors.resuming("c");
        assert!(
            interpret(&message(4), &mut cursors).is_empty(),
            "held for the replay"
        );
        // The resume was refused: no `resumed` comes for it.
        cursors.waiting.get_mut("c").unwrap().0 -= RESUME_WAIT;
        assert_eq!(seqs(&interpret(&message(5), &mut cursors)), [4, 5]);
        assert!(cursors.waiting.is_empty());
    }
}
