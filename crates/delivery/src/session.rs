//! One WebSocket session: the frames of API.md, per-conversation order, gap repair and resume.
//!
//! A session runs as one task that owns its socket. It waits on the client's frames, on pushes
//! from the hub, and on its timers, and writes to the socket itself, so there is exactly one
//! writer and frames leave in the order the session decided.
//!
//! Order and completeness rest on one number per conversation: the cursor, the highest seq this
//! socket has been given (or that the client said it has, or that existed when the socket
//! opened). A message at or below the cursor is a duplicate and is dropped; the next one is pushed;
//! one further ahead means something was missed (a forward lost while Redis was down, a
//! rebalance), and the messages in between are fetched from messaging's history first. `resume`
//! sets cursors from the client and replays from them the same way, so live messages that arrive
//! during a replay are either already covered (dropped) or follow it in order.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt as _;
use realchat_proto::{
    delivery::v1::{Presence, Typing, forward::Item},
    messaging::v1::{
        ConversationSummary, GetConversationRequest, HistoryRequest, ListConversationsRequest,
    },
};
use realchat_runtime::{
    clients::MessagingClient,
    jwt::{Claims, Verifier},
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    budget::{Budget, FrameLimits, NotMember, Verdict},
    cluster::Cluster,
    fanout,
    hub::{Delivered, Hub, Opening, Push},
    metrics,
    protocol::{self, ClientFrame, FrameError, close},
};

/// How sessions behave.
#[derive(Debug, Clone)]
pub(crate) struct SessionOptions {
    /// No frame from the client for this long closes the socket.
    pub(crate) idle_timeout: Duration,
    /// The server pings this often, so live clients answer and count as active.
    pub(crate) ping_interval: Duration,
    /// A socket write that takes longer than this means the reader is not reading.
    pub(crate) write_timeout: Duration,
    /// Conversations bigger than this do not make their members contacts (for presence), and
    /// typing notices in them are not relayed.
    pub(crate) presence_max_members: usize,
    /// What one socket may send.
    pub(crate) frames: FrameLimits,
    /// Sockets one user may hold open, across the replicas.
    pub(crate) max_sockets_per_user: u32,
}

/// What every session of a replica shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) hub: Arc<Hub>,
    pub(crate) cluster: Cluster,
    pub(crate) messaging: MessagingClient,
    pub(crate) options: SessionOptions,
    /// Cancelled once the consumer has committed on shutdown: close with 1001.
    pub(crate) closing: CancellationToken,
    /// Resyncs and resumes that may run at once, so a Redis blip (or a crowd reconnecting)
    /// does not send every session of the replica to messaging in the same instant.
    pub(crate) resyncs: tokio::sync::Semaphore,
    /// Best-effort work a socket or the sweep starts and does not wait for (presence
    /// announcements, typing notices): bounded, and waited for by the drain.
    pub(crate) background: realchat_runtime::shutdown::Background,
    /// The token verifier, which knows the revoked sessions.
    pub(crate) verifier: Arc<Verifier>,
}

/// Messages fetched per history call.
const PAGE: u32 = 200;
/// Queued pushes a session applies before it flushes its socket, at most.
const BATCH: usize = 64;
/// Typing notices relayed per conversation, at most one per this interval.
const TYPING_INTERVAL: Duration = Duration::from_millis(500);

/// Why a session ended: the close frame, if any, and the metric label.
#[derive(Debug)]
struct Closing {
    code: Option<u16>,
    reason: &'static str,
    label: &'static str,
    /// The code of the client's close frame, when the client closed.
    received: Option<u16>,
}

impl Closing {
    fn with(code: u16, reason: &'static str, label: &'static str) -> Self {
        Self {
            code: Some(code),
            reason,
            label,
            received: None,
        }
    }

    /// The socket is gone or broken: nothing to send.
    fn gone(label: &'static str) -> Self {
        Self {
            code: None,
            reason: "",
            label,
            received: None,
        }
    }

    /// The client closed; its close frame is answered by the socket itself. A frame without a
    /// code counts as 1005, as RFC 6455 reports it.
    fn by_client(frame: Option<CloseFrame>) -> Self {
        Self {
            received: Some(frame.map_or(1005, |frame| frame.code)),
            ..Self::gone("client")
        }
    }

    /// The `code` label of [`metrics::SOCKET_CLOSES`]: the code sent or received, `none` when
    /// the connection ended without a close frame. Codes past the protocol's own (3000 to 4999
    /// are the applications') are `other`: a client picks them, and must not grow the label set.
    fn code_label(&self) -> ::metrics::SharedString {
        match self.code.or(self.received) {
            None => "none".into(),
            Some(code @ 1000..=1015) => code.to_string().into(),
            Some(_) => "other".into(),
        }
    }
}

/// What a conversation's history call said.
enum History {
    Page(Vec<realchat_proto::messaging::v1::Message>),
    /// The user is not (or no longer) a member.
    NotMember,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Runs a session until it closes.
pub(crate) async fn run(socket: WebSocket, claims: Claims, shared: Arc<Shared>, opening: Opening) {
    let (user, token_expires_at) = (claims.sub, claims.exp);
    let registration = shared.hub.register(user);
    drop(opening);
    ::metrics::counter!(metrics::SESSIONS_OPENED).increment(1);
    let mut session = Session {
        socket,
        user,
        user_text: user.to_string(),
        session_id: claims.sid,
        cursors: HashMap::new(),
        typing_at: HashMap::new(),
        opened_at_ms: now_ms(),
        shared: Arc::clone(&shared),
        overflow: registration.overflow.clone(),
        unflushed: false,
        budget: Budget::new(shared.options.frames, Instant::now()),
        not_member: NotMember::default(),
    };
    let closing = session
        .serve(registration.rx, registration.first_here, token_expires_at)
        .await;
    ::metrics::counter!(metrics::SESSIONS_CLOSED, "reason" => closing.label).increment(1);
    ::metrics::counter!(metrics::SOCKET_CLOSES, "code" => closing.code_label()).increment(1);
    tracing::debug!(user.id = %user, reason = closing.label, code = ?closing.code, "session closed");
    if let Some(code) = closing.code {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(closing.reason),
        };
        // Best effort: the peer may already be gone.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let sent =
            tokio::time::timeout_at(deadline, session.socket.send(Message::Close(Some(frame))))
                .await;
        if matches!(sent, Ok(Ok(()))) {
            // Wait for the peer to answer the close (or a second to pass) before dropping the
            // connection: dropping it with bytes of theirs unread makes the kernel reset it, and
            // a reset can overtake the close frame, so the peer would see 1006 instead of the
            // code it is owed.
            while let Ok(Some(Ok(_))) =
                tokio::time::timeout_at(deadline, session.socket.recv()).await
            {}
            if code == close::TOO_BIG {
                // The rest of the oversized frame is unread, and the stream cannot be read past
                // the error: give the peer its second to read the close.
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
    let contacts = session.contacts();
    drop(session);
    let last_here = shared.hub.unregister(user, registration.id);
    // Best effort: a count left too high is put right by the user's next socket here.
    let _ = shared
        .cluster
        .sockets_here(&user, shared.hub.sockets_of(&user))
        .await;
    if last_here && let Ok(true) = shared.cluster.release(&user).await {
        announce(&shared, user, false, contacts).await;
    }
}

struct Session {
    socket: WebSocket,
    user: Uuid,
    /// The login session of the socket's token (`sid`): revoking it closes the socket.
    session_id: Option<Uuid>,
    user_text: String,
    /// Per conversation: the highest seq this socket has (see the module docs).
    cursors: HashMap<Uuid, i64>,
    typing_at: HashMap<Uuid, Instant>,
    opened_at_ms: i64,
    shared: Arc<Shared>,
    overflow: CancellationToken,
    /// Frames were queued on the socket since the last flush.
    unflushed: bool,
    /// What the client may still send.
    budget: Budget,
    /// Conversations messaging recently said the user is not in.
    not_member: NotMember,
}

impl Session {
    async fn serve(
        &mut self,
        mut rx: tokio::sync::mpsc::Receiver<Push>,
        first_here: bool,
        token_expires_at: i64,
    ) -> Closing {
        // `ready` means live: the hub has the session, Redis routes to it (unless Redis is
        // down, when the next heartbeat does), and the cursors say where each conversation
        // stood, so the socket is owed exactly what comes after.
        let came_online = first_here && self.claim().await;
        if let Err(closing) = self.load_conversations(true).await {
            return closing;
        }
        let session_id = Uuid::new_v4().to_string();
        if let Err(closing) = self
            .send(protocol::ready(&session_id, self.user), "ready")
            .await
        {
            return closing;
        }
        if let Err(closing) = self.flush().await {
            return closing;
        }
        if came_online {
            let (shared, user, contacts) = (Arc::clone(&self.shared), self.user, self.contacts());
            self.shared.background.spawn(async move {
                announce(&shared, user, true, contacts).await;
            });
        }

        let expires_in =
            Duration::from_secs(u64::try_from(token_expires_at - now_ms() / 1000).unwrap_or(0));
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let mut ping = tokio::time::interval(self.shared.options.ping_interval);
        ping.reset();
        let mut last_heard = Instant::now();
        // Made once: a future made anew on every turn of the loop registers anew every time,
        // and the loop turns once per frame.
        let closing_token = self.shared.closing.clone();
        let closing = closing_token.cancelled();
        tokio::pin!(closing);
        let overflow_token = self.overflow.clone();
        let overflow = overflow_token.cancelled();
        tokio::pin!(overflow);

        loop {
            let result = tokio::select! {
                biased;
                () = &mut closing => {
                    return Closing::with(close::GOING_AWAY, "server shutting down", "shutdown");
                }
                () = &mut overflow => {
                    return Closing::with(close::TRY_AGAIN_LATER, "too slow: reconnect and resume", "slow_reader");
                }
                () = &mut expiry => {
                    return Closing::with(close::POLICY, "token expired", "token_expired");
                }
                push = rx.recv() => match push {
                    Some(push) => self.apply_queued(push, &mut rx).await,
                    None => return Closing::gone("error"),
                },
                frame = self.socket.recv() => {
                    last_heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => self.on_text(&text).await,
                        Some(Ok(Message::Binary(_))) => {
                            self.refuse(&FrameError::invalid("frames are JSON text frames")).await
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                        Some(Ok(Message::Close(frame))) => return Closing::by_client(frame),
                        None => return Closing::gone("client"),
                        Some(Err(error)) => return frame_error(error),
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= self.shared.options.idle_timeout {
                        return Closing::with(close::NORMAL, "idle timeout", "idle");
                    }
                    self.write(Message::Ping(Default::default())).await
                }
            };
            if let Err(closing) = result.and(self.flush().await) {
                return closing;
            }
        }
    }

    /// Claims the user's route; true when they just came online. If Redis cannot be told, the
    /// session is marked unrouted: forwards may miss it until the next heartbeat claims it, and
    /// that heartbeat then has it resync.
    async fn claim(&mut self) -> bool {
        match self.shared.cluster.claim(&self.user).await {
            Ok(came_online) => came_online,
            Err(_) => {
                self.shared.hub.mark_unrouted(self.user);
                false
            }
        }
    }

    /// Applies `push` and whatever else is already queued (up to a batch), so that a session
    /// that fell behind writes its frames in one go: the loop flushes once after it.
    async fn apply_queued(
        &mut self,
        push: Push,
        rx: &mut tokio::sync::mpsc::Receiver<Push>,
    ) -> Result<(), Closing> {
        self.apply(push).await?;
        for _ in 1..BATCH {
            let Ok(push) = rx.try_recv() else { break };
            self.apply(push).await?;
        }
        Ok(())
    }

    /// Queues a frame on the socket, giving up on a reader that does not read. It leaves when
    /// the buffer is full or at the next [`Session::flush`].
    async fn write(&mut self, message: Message) -> Result<(), Closing> {
        self.unflushed = true;
        let (overflow, timeout) = (self.overflow.clone(), self.shared.options.write_timeout);
        bounded(overflow, timeout, self.socket.feed(message)).await
    }

    /// Sends what [`Session::write`] queued, under the same bound.
    async fn flush(&mut self) -> Result<(), Closing> {
        if !std::mem::take(&mut self.unflushed) {
            return Ok(());
        }
        let (overflow, timeout) = (self.overflow.clone(), self.shared.options.write_timeout);
        bounded(overflow, timeout, self.socket.flush()).await
    }

    async fn send(&mut self, frame: Utf8Bytes, kind: &'static str) -> Result<(), Closing> {
        self.write(Message::Text(frame)).await?;
        ::metrics::counter!(metrics::FRAMES_SENT, "type" => kind).increment(1);
        Ok(())
    }

    async fn refuse(&mut self, error: &FrameError) -> Result<(), Closing> {
        self.send(protocol::error(error), "error").await
    }

    async fn apply(&mut self, push: Push) -> Result<(), Closing> {
        match push {
            Push::Message(delivered) => self.push_message(&delivered).await,
            Push::Frame(frame, kind) => self.send(frame, kind).await,
            Push::Joined {
                conversation,
                last_seq,
            } => {
                self.not_member.forget(&conversation);
                let cursor = self.cursors.entry(conversation).or_insert(last_seq);
                *cursor = (*cursor).max(last_seq);
                Ok(())
            }
            Push::Left { conversation } => {
                self.cursors.remove(&conversation);
                Ok(())
            }
            Push::Revoked => {
                if self
                    .session_id
                    .is_some_and(|session| self.shared.verifier.is_revoked(&session))
                {
                    return Err(Closing::with(
                        close::POLICY,
                        "session revoked",
                        "session_revoked",
                    ));
                }
                Ok(())
            }
            Push::Resync => {
                let shared = Arc::clone(&self.shared);
                let _permit = shared.resyncs.acquire().await;
                self.load_conversations(false).await
            }
        }
    }

    /// Pushes a live message in order: drops what the socket has, fills a gap first.
    async fn push_message(&mut self, delivered: &Delivered) -> Result<(), Closing> {
        let conversation = delivered.conversation;
        match self.cursors.get(&conversation).copied() {
            Some(cursor) if delivered.seq <= cursor => return Ok(()),
            Some(cursor) if delivered.seq > cursor + 1 => {
                if !self
                    .fill(conversation, cursor, Some(delivered.seq - 1), "gap")
                    .await?
                {
                    return Ok(());
                }
                if self
                    .cursors
                    .get(&conversation)
                    .is_some_and(|c| *c >= delivered.seq)
                {
                    return Ok(());
                }
            }
            // Not known when the socket opened nor joined since (a lost member.added): this
            // message starts the socket's view of the conversation.
            _ => {}
        }
        // The end of the message's trace: its frame written to this socket. Only for a traced
        // message: a span per frame is not free, and without a trace it would lead nowhere.
        if delivered.trace.is_valid() {
            let span = tracing::info_span!(
                parent: None,
                "socket_write",
                user.id = %self.user,
                message.seq = delivered.seq,
            );
            delivered.trace.adopt(&span);
            self.send(delivered.frame.clone(), "message")
                .instrument(span)
                .await?;
        } else {
            self.send(delivered.frame.clone(), "message").await?;
        }
        self.cursors.insert(conversation, delivered.seq);
        let delay_ms = (now_ms() - delivered.committed_at_ms).max(0);
        ::metrics::histogram!(metrics::COMMIT_TO_SOCKET_SECONDS).record(delay_ms as f64 / 1000.0);
        Ok(())
    }

    /// Pushes messages after `after` from history, up to `until` (or the newest). False when the
    /// user is not a member (the conversation is dropped).
    async fn fill(
        &mut self,
        conversation: Uuid,
        after: i64,
        until: Option<i64>,
        reason: &'static str,
    ) -> Result<bool, Closing> {
        let mut cursor = after;
        loop {
            let page = match self.history(conversation, cursor).await? {
                History::Page(page) => page,
                History::NotMember => {
                    self.cursors.remove(&conversation);
                    return Ok(false);
                }
            };
            let full = page.len() >= PAGE as usize;
            for message in &page {
                if message.seq <= cursor {
                    continue;
                }
                self.send(protocol::message_from_history(message), "message")
                    .await?;
                cursor = message.seq;
                self.cursors.insert(conversation, cursor);
                ::metrics::counter!(metrics::GAP_FILLED, "reason" => reason).increment(1);
            }
            if !full || until.is_some_and(|until| cursor >= until) {
                return Ok(true);
            }
        }
    }

    /// One page of history after `after`, retried briefly; a socket that cannot be kept
    /// consistent is closed so its client resumes later.
    async fn history(&mut self, conversation: Uuid, after: i64) -> Result<History, Closing> {
        let request = HistoryRequest {
            caller_id: self.user_text.clone(),
            conversation_id: conversation.to_string(),
            after_seq: Some(after),
            before_seq: None,
            limit: Some(PAGE),
        };
        for attempt in 0..3u32 {
            let mut messaging = self.shared.messaging.clone();
            match messaging.history(request.clone()).await {
                Ok(response) => return Ok(History::Page(response.into_inner().messages)),
                Err(status) if status.code() == tonic::Code::NotFound => {
                    return Ok(History::NotMember);
                }
                Err(status) => {
                    tracing::warn!(conversation.id = %conversation, attempt, error = %status.message(), "history unavailable");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
        Err(Closing::with(
            close::INTERNAL,
            "history unavailable: reconnect and resume",
            "error",
        ))
    }

    /// Loads the user's conversations. The first time, their newest seqs become the cursors (the
    /// socket is owed what comes next). On a resync, whatever is newer than a cursor is pushed
    /// from history, and a conversation created since the socket opened is pushed whole.
    async fn load_conversations(&mut self, first: bool) -> Result<(), Closing> {
        let conversations = match self.list_conversations().await {
            Ok(conversations) => conversations,
            Err(status) if first => {
                // Without the list this socket cannot know where each conversation stands: the
                // first live message of a conversation would start its view, ahead of what the
                // client is owed, and the client's `resume` would then replay the rest after it,
                // out of order. Refused, the client reconnects and resumes.
                tracing::warn!(user.id = %self.user, error = %status.message(), "cannot list the user's conversations");
                return Err(Closing::with(
                    close::INTERNAL,
                    "conversations unavailable: reconnect and resume",
                    "error",
                ));
            }
            Err(status) => {
                // A resync repairs what this socket missed live; dropping it would leave those
                // messages owed with nothing to deliver them. The client's resume can.
                tracing::warn!(user.id = %self.user, error = %status.message(), "cannot list the user's conversations to resync");
                return Err(Closing::with(
                    close::INTERNAL,
                    "resync unavailable: reconnect and resume",
                    "error",
                ));
            }
        };
        for summary in conversations {
            let Some(conversation) = summary.conversation else {
                continue;
            };
            let Ok(id) = conversation.id.parse::<Uuid>() else {
                continue;
            };
            // A list carries only the first members of a big group: remembered only whole.
            if conversation.member_ids.len() == conversation.member_count as usize {
                let members: Vec<Uuid> = conversation
                    .member_ids
                    .iter()
                    .filter_map(|m| m.parse().ok())
                    .collect();
                self.shared.hub.set_members(id, members.into());
            }
            if first {
                self.cursors.insert(id, conversation.last_seq);
                continue;
            }
            let cursor = match self.cursors.get(&id) {
                Some(cursor) => *cursor,
                None if conversation.created_at_ms >= self.opened_at_ms => 0,
                None => {
                    self.cursors.insert(id, conversation.last_seq);
                    continue;
                }
            };
            if conversation.last_seq > cursor {
                self.fill(id, cursor, Some(conversation.last_seq), "resync")
                    .await?;
            }
        }
        Ok(())
    }

    /// The user's conversations, retried briefly as a page of history is.
    async fn list_conversations(&mut self) -> Result<Vec<ConversationSummary>, tonic::Status> {
        let request = ListConversationsRequest {
            caller_id: self.user_text.clone(),
        };
        let mut attempt = 0u32;
        loop {
            let mut messaging = self.shared.messaging.clone();
            match messaging.list_conversations(request.clone()).await {
                Ok(response) => return Ok(response.into_inner().conversations),
                Err(status) if attempt < 2 && status.code() != tonic::Code::InvalidArgument => {
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    attempt += 1;
                }
                Err(status) => return Err(status),
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Closing> {
        match self.budget.take(1, Instant::now()) {
            Verdict::Allowed => {}
            Verdict::Refused { retry_after } => {
                ::metrics::counter!(metrics::FRAMES_REFUSED, "reason" => "rate_limited")
                    .increment(1);
                return self
                    .refuse(&FrameError::rate_limited(
                        "too many frames: wait and send again",
                        retry_after,
                    ))
                    .await;
            }
            Verdict::Abusive => {
                ::metrics::counter!(metrics::FRAMES_REFUSED, "reason" => "abusive").increment(1);
                return Err(Closing::with(
                    close::POLICY,
                    "too many frames",
                    "too_many_frames",
                ));
            }
        }
        let frame = match ClientFrame::parse(text) {
            Ok(frame) => frame,
            Err(error) => return self.refuse(&error).await,
        };
        match frame {
            ClientFrame::Ping => self.send(protocol::pong(), "pong").await,
            ClientFrame::Resume { cursors } => self.resume(cursors).await,
            ClientFrame::Typing { conversation_id } => self.typing(conversation_id).await,
        }
    }

    /// Replays each named conversation after the client's cursor, then says `resumed`.
    ///
    /// The work is bounded: replays take one of the replica's catch-up permits (shared with
    /// resyncs), and a conversation the socket does not know (not in the list it loaded, nor
    /// joined since) costs a membership question, paid from the frame budget. What the budget
    /// cannot pay for now is answered with one `rate_limited` error; the client resumes those
    /// conversations again after the hint.
    async fn resume(&mut self, cursors: HashMap<Uuid, i64>) -> Result<(), Closing> {
        let mut cursors: Vec<(Uuid, i64)> = cursors.into_iter().collect();
        cursors.sort_unstable();
        let shared = Arc::clone(&self.shared);
        let _permit = shared.resyncs.acquire().await;
        let mut deferred = 0usize;
        let mut retry_after = Duration::ZERO;
        for (conversation, from) in cursors {
            if !self.cursors.contains_key(&conversation) {
                let now = Instant::now();
                if self.not_member.knows(&conversation, now) {
                    self.refuse(&FrameError::not_found(conversation)).await?;
                    continue;
                }
                if deferred > 0 {
                    deferred += 1;
                    continue;
                }
                match self.budget.take(1, now) {
                    Verdict::Allowed => {}
                    Verdict::Refused { retry_after: wait } => {
                        deferred = 1;
                        retry_after = wait;
                        continue;
                    }
                    Verdict::Abusive => {
                        return Err(Closing::with(
                            close::POLICY,
                            "too many frames",
                            "too_many_frames",
                        ));
                    }
                }
                if self.members_of(conversation).await?.is_none() {
                    self.refuse(&FrameError::not_found(conversation)).await?;
                    continue;
                }
            }
            // The client's word is what it has; anything after it is replayed.
            self.cursors.insert(conversation, from);
            if self.fill(conversation, from, None, "resume").await? {
                let last = self.cursors.get(&conversation).copied().unwrap_or(from);
                self.send(protocol::resumed(conversation, last), "resumed")
                    .await?;
            } else {
                self.refuse(&FrameError::not_found(conversation)).await?;
            }
        }
        if deferred > 0 {
            ::metrics::counter!(metrics::FRAMES_REFUSED, "reason" => "resume_deferred")
                .increment(1);
            self.refuse(&FrameError::rate_limited(
                format!(
                    "{deferred} conversations of this resume were not replayed: resume them again later"
                ),
                retry_after,
            ))
            .await?;
        }
        Ok(())
    }

    /// Relays a typing notice to the other members, at most one per conversation per interval.
    async fn typing(&mut self, conversation: Uuid) -> Result<(), Closing> {
        let members = match self.members_of(conversation).await? {
            Some(members) => members,
            None => {
                tracing::debug!(user.id = %self.user, conversation.id = %conversation, "typing refused: not a member");
                return self.refuse(&FrameError::not_found(conversation)).await;
            }
        };
        if members.len() > self.shared.options.presence_max_members {
            // A notice in a big group would be a frame to every member, for little use.
            return Ok(());
        }
        let now = Instant::now();
        if self
            .typing_at
            .get(&conversation)
            .is_some_and(|at| now.duration_since(*at) < TYPING_INTERVAL)
        {
            return Ok(());
        }
        self.typing_at.insert(conversation, now);
        let recipients: Vec<Uuid> = members
            .iter()
            .copied()
            .filter(|m| *m != self.user)
            .collect();
        tracing::debug!(user.id = %self.user, conversation.id = %conversation, recipients = recipients.len(), "relaying a typing notice");
        let shared = Arc::clone(&self.shared);
        let (conversation_text, user_text) = (conversation.to_string(), self.user_text.clone());
        // Ephemeral and best effort: the socket does not wait for Redis.
        self.shared.background.spawn(async move {
            let push = Push::Frame(protocol::typing(&conversation_text, &user_text), "typing");
            fanout::spread(&shared.hub, &shared.cluster, &recipients, &push, || {
                Item::Typing(Typing {
                    conversation_id: conversation_text.clone(),
                    user_id: user_text.clone(),
                })
            })
            .await;
        });
        Ok(())
    }

    /// The members of a conversation the user belongs to; `None` if they do not (remembered
    /// for a while, so asking again costs messaging nothing).
    async fn members_of(&mut self, conversation: Uuid) -> Result<Option<Arc<[Uuid]>>, Closing> {
        if self.cursors.contains_key(&conversation)
            && let Some(members) = self.shared.hub.members(&conversation)
            && members.contains(&self.user)
        {
            return Ok(Some(members));
        }
        if self.not_member.knows(&conversation, Instant::now()) {
            return Ok(None);
        }
        let mut messaging = self.shared.messaging.clone();
        let answer = messaging
            .get_conversation(GetConversationRequest {
                caller_id: self.user_text.clone(),
                conversation_id: conversation.to_string(),
            })
            .await;
        match answer {
            Ok(response) => {
                ::metrics::counter!(metrics::MEMBERSHIP_CHECKS, "answer" => "member").increment(1);
                let found = response.into_inner();
                let members: Arc<[Uuid]> = found
                    .member_ids
                    .iter()
                    .filter_map(|m| m.parse().ok())
                    .collect::<Vec<_>>()
                    .into();
                self.shared
                    .hub
                    .set_members(conversation, Arc::clone(&members));
                self.cursors.entry(conversation).or_insert(found.last_seq);
                Ok(Some(members))
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::InvalidArgument
                ) =>
            {
                ::metrics::counter!(metrics::MEMBERSHIP_CHECKS, "answer" => "not_member")
                    .increment(1);
                self.not_member.remember(conversation, Instant::now());
                Ok(None)
            }
            Err(status) => {
                ::metrics::counter!(metrics::MEMBERSHIP_CHECKS, "answer" => "unavailable")
                    .increment(1);
                tracing::warn!(error = %status.message(), "cannot check a typing notice's conversation");
                Ok(None)
            }
        }
    }

    /// Everyone who shares a conversation with the user (as far as this replica knows), big
    /// groups aside.
    fn contacts(&self) -> Vec<Uuid> {
        let most = self.shared.options.presence_max_members;
        let mut contacts: Vec<Uuid> = self
            .cursors
            .keys()
            .filter_map(|c| self.shared.hub.members(c))
            .filter(|members| members.len() <= most)
            .flat_map(|members| members.iter().copied().collect::<Vec<_>>())
            .filter(|m| *m != self.user)
            .collect();
        contacts.sort_unstable();
        contacts.dedup();
        contacts
    }
}

/// Runs a socket write or flush, giving up (1013) on a reader that does not read: the write
/// takes longer than `timeout`, or the session's queue overflowed meanwhile.
async fn bounded(
    overflow: CancellationToken,
    timeout: Duration,
    io: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), Closing> {
    tokio::select! {
        // The write first: it almost always completes at once, and then the timer is never even
        // registered.
        biased;
        done = io => done.map_err(|_| Closing::gone("error")),
        () = overflow.cancelled() => Err(Closing::with(close::TRY_AGAIN_LATER, "too slow: reconnect and resume", "slow_reader")),
        () = tokio::time::sleep(timeout) => {
            Err(Closing::with(close::TRY_AGAIN_LATER, "too slow: reconnect and resume", "slow_reader"))
        }
    }
}

/// Maps a read error to how the session ends: an oversized frame is 1009, anything else means
/// the connection is broken.
fn frame_error(error: axum::Error) -> Closing {
    use tokio_tungstenite::tungstenite::Error;
    match error.into_inner().downcast_ref::<Error>() {
        Some(Error::Capacity(_)) => {
            Closing::with(close::TOO_BIG, "frame over 64 KiB", "frame_too_large")
        }
        _ => Closing::gone("error"),
    }
}

/// Tells the user's contacts that the user came online or went offline.
pub(crate) async fn announce(shared: &Shared, user: Uuid, online: bool, contacts: Vec<Uuid>) {
    if contacts.is_empty() {
        return;
    }
    let user_text = user.to_string();
    let push = Push::Frame(protocol::presence(&user_text, online), "presence");
    fanout::spread(&shared.hub, &shared.cluster, &contacts, &push, || {
        Item::Presence(Presence {
            user_id: user_text.clone(),
            online,
        })
    })
    .await;
}
