//! Metric names of the delivery service, described once. Labels are bounded: never a user id.

/// Open WebSocket sessions on this replica.
pub const SESSIONS: &str = "delivery_sessions";
/// Sessions opened.
pub const SESSIONS_OPENED: &str = "delivery_sessions_opened_total";
/// Sessions closed, by `reason` (`client`, `idle`, `slow_reader`, `token_expired`, `shutdown`,
/// `frame_too_large`, `error`).
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
}
