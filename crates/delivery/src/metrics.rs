//! Metric names of the delivery service, described once. Labels are bounded: never a user id.

/// Open WebSocket sessions on this replica.
pub const SESSIONS: &str = "delivery_sessions";
/// Sessions opened.
pub const SESSIONS_OPENED: &str = "delivery_sessions_opened_total";
/// Sessions closed, by `reason` (`client`, `idle`, `slow_reader`, `token_expired`, `shutdown`,
/// `frame_too_large`, `too_many_frames`, `too_many_sockets`, `error`).
pub const SESSIONS_CLOSED: &str = "delivery_sessions_closed_total";
/// Frames written to sockets, by `type`.
pub const FRAMES_SENT: &str = "delivery_frames_sent_total";
/// Seconds from a message's commit to its frame being written to a socket.
pub const COMMIT_TO_SOCKET_SECONDS: &str = "delivery_commit_to_socket_seconds";
/// Messages fetched from history to fill a gap, by `reason` (`gap`, `resume`, `resync`).
pub const GAP_FILLED: &str = "delivery_gap_filled_messages_total";
/// Forwards published to other replicas, by `outcome` (`sent`, `no_listener`, `failed`).
pub const FORWARDS: &str = "delivery_forwards_total";
/// Forwards received from other replicas.
pub const FORWARDS_RECEIVED: &str = "delivery_forwards_received_total";
/// Redis operations that failed or timed out, by `op`.
pub const REDIS_ERRORS: &str = "delivery_redis_errors_total";
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
    metrics::describe_counter!(FRAMES_SENT, "Frames written to sockets, by type");
    metrics::describe_histogram!(
        COMMIT_TO_SOCKET_SECONDS,
        metrics::Unit::Seconds,
        "Time from a message's commit to its frame on a socket"
    );
    metrics::describe_counter!(GAP_FILLED, "Messages fetched from history to fill gaps");
    metrics::describe_counter!(FORWARDS, "Forwards to other replicas, by outcome");
    metrics::describe_counter!(FORWARDS_RECEIVED, "Forwards received from other replicas");
    metrics::describe_counter!(REDIS_ERRORS, "Failed Redis operations, by operation");
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
