//! Metric names of the delivery service, described once. Labels are bounded: never a user id.

/// Open WebSocket sessions on this replica.
pub const SESSIONS: &str = "delivery_sessions";
/// Sessions opened.
pub const SESSIONS_OPENED: &str = "delivery_sessions_opened_total";
/// Sessions closed, by `reason` (`client`, `idle`, `slow_reader`, `token_expired`, `shutdown`,
/// `frame_too_large`, `too_many_frames`, `too_many_sockets`, `error`).
pub const SESSIONS_CLOSED: &str = "delivery_sessions_closed_total";
/// Sessions closed, by `code`: the close code the server sent or the client did (`1000` to
/// `1015`; `other` for the codes applications pick, `none` when the connection ended without a
/// close frame). One per session, like [`SESSIONS_CLOSED`].
pub const SOCKET_CLOSES: &str = "delivery_socket_closes_total";
/// Frames written to sockets, by `type` as the protocol names it (`ready`, `message`,
/// `resumed`, `typing`, `read`, `presence`, `pong`, `error`).
pub const FRAMES_SENT: &str = "delivery_frames_sent_total";
/// Pushes queued for this replica's sockets and not yet taken by their sessions (a push is a
/// frame, or now and then a resync), read at each scrape.
pub const SEND_QUEUE: &str = "delivery_send_queue_frames";
/// Sockets of this replica one event was handed to (from the consumer, a forward, or a
/// socket's typing notice or presence change).
pub const FANOUT_SOCKETS: &str = "delivery_fanout_sockets";
/// Seconds from receiving an event to handing it to the last of this replica's sockets.
pub const FANOUT_SECONDS: &str = "delivery_fanout_seconds";
/// Seconds from a message's commit to its frame being written to a socket.
pub const COMMIT_TO_SOCKET_SECONDS: &str = "delivery_commit_to_socket_seconds";
/// Messages fetched from history to fill a gap, by `reason` (`gap`, `resume`, `resync`).
pub const GAP_FILLED: &str = "delivery_gap_filled_messages_total";
/// Forwards published to other replicas, by `target` (the node id the replica runs as,
/// `REALCHAT_DELIVERY_NODE_ID`, without the per-process suffix) and `outcome` (`sent`,
/// `no_listener`, `failed`).
pub const FORWARDS: &str = "delivery_forwards_total";
/// Forwards received from other replicas.
pub const FORWARDS_RECEIVED: &str = "delivery_forwards_received_total";
/// Redis operations that failed or timed out, by `op`.
pub const REDIS_ERRORS: &str = "delivery_redis_errors_total";
/// Seconds each Redis round trip took, answered or failed (not those the breaker skipped), by
/// `op`, the same as [`REDIS_ERRORS`]: `claim`, `release`, `open_socket`, `sockets_here`,
/// `routes`, `forward`, `resync`, `presence`, `heartbeat`, `sweep`, `leave`.
pub const REDIS_SECONDS: &str = "delivery_redis_seconds";
/// Presence sweeps completed: looks for replicas whose heartbeat expired, one per heartbeat.
pub const PRESENCE_SWEEPS: &str = "delivery_presence_sweeps_total";
/// Users a sweep found held only by dead replicas, and marked offline.
pub const PRESENCE_SWEPT_USERS: &str = "delivery_presence_swept_users_total";
/// Times every session was told to resync: the forwarding channel came (back), or another
/// replica had skipped forwards to this one.
pub const RESYNCS: &str = "delivery_resyncs_total";

/// Client frames refused for the socket's frame budget, by `reason` (`rate_limited`,
/// `abusive`, `resume_deferred`).
pub const FRAMES_REFUSED: &str = "delivery_frames_refused_total";
/// Conversations' members asked of messaging for a client frame (a typing notice, a resume of
/// a conversation the socket did not know), by `answer` (`member`, `not_member`, `unavailable`).
pub const MEMBERSHIP_CHECKS: &str = "delivery_membership_checks_total";
/// WebSocket upgrades refused because the user has as many sockets as allowed, by `where`
/// (`cluster`, `replica`: counted here only, Redis being unusable).
pub const SOCKETS_REFUSED: &str = "delivery_sockets_refused_total";

/// Registers the descriptions with the recorder.
pub fn describe() {
    metrics::describe_gauge!(SESSIONS, "Open WebSocket sessions");
    metrics::describe_counter!(SESSIONS_OPENED, "WebSocket sessions opened");
    metrics::describe_counter!(SESSIONS_CLOSED, "WebSocket sessions closed, by reason");
    metrics::describe_counter!(
        SOCKET_CLOSES,
        "WebSocket closes, by the close code sent or received (none: no close frame)"
    );
    metrics::describe_counter!(FRAMES_SENT, "Frames written to sockets, by type");
    metrics::describe_gauge!(
        SEND_QUEUE,
        "Pushes queued for this replica's sockets, not yet written"
    );
    metrics::describe_histogram!(
        FANOUT_SOCKETS,
        "Sockets of this replica one event was handed to"
    );
    metrics::describe_histogram!(
        FANOUT_SECONDS,
        metrics::Unit::Seconds,
        "Time from receiving an event to handing it to the last of this replica's sockets"
    );
    metrics::describe_histogram!(
        COMMIT_TO_SOCKET_SECONDS,
        metrics::Unit::Seconds,
        "Time from a message's commit to its frame on a socket"
    );
    metrics::describe_counter!(GAP_FILLED, "Messages fetched from history to fill gaps");
    metrics::describe_counter!(
        FORWARDS,
        "Forwards to other replicas, by target node and outcome"
    );
    metrics::describe_counter!(FORWARDS_RECEIVED, "Forwards received from other replicas");
    metrics::describe_counter!(REDIS_ERRORS, "Failed Redis operations, by operation");
    metrics::describe_histogram!(
        REDIS_SECONDS,
        metrics::Unit::Seconds,
        "Redis round trips, answered or failed, by operation"
    );
    metrics::describe_counter!(PRESENCE_SWEEPS, "Presence sweeps completed");
    metrics::describe_counter!(
        PRESENCE_SWEPT_USERS,
        "Users of dead replicas a sweep marked offline"
    );
    metrics::describe_counter!(
        RESYNCS,
        "Forwarding channel losses that resynced every session"
    );
    metrics::describe_counter!(
        FRAMES_REFUSED,
        "Client frames refused for the socket's frame budget, by reason"
    );
    metrics::describe_counter!(
        MEMBERSHIP_CHECKS,
        "Conversation members asked of messaging for client frames, by answer"
    );
    metrics::describe_counter!(
        SOCKETS_REFUSED,
        "WebSocket upgrades refused: the user has as many sockets as allowed"
    );
}
