//! Metric names of the outbox relay, described once.

/// Rows waiting in the outbox (sampled).
pub const OUTBOX_BACKLOG: &str = "outbox_backlog_rows";
/// Age in seconds of the oldest row waiting in the outbox (sampled; 0 when empty).
pub const OUTBOX_OLDEST_AGE: &str = "outbox_oldest_row_age_seconds";
/// Events the relay published and deleted, by `topic`.
pub const OUTBOX_PUBLISHED: &str = "outbox_published_total";
/// Events the broker did not acknowledge (kept for the next attempt), by `topic`.
pub const OUTBOX_FAILED: &str = "outbox_publish_failed_total";
/// Rows the producer refused for good (left in the table with their key held back), by `topic`.
pub const OUTBOX_REFUSED: &str = "outbox_refused_total";
/// Seconds from the row's commit to the broker's acknowledgement.
pub const OUTBOX_DELAY: &str = "outbox_publish_delay_seconds";
/// 1 while this process is the publishing relay, else 0.
pub const OUTBOX_LEADER: &str = "outbox_relay_leader";

/// Registers the descriptions with the recorder.
pub fn describe() {
    metrics::describe_gauge!(OUTBOX_BACKLOG, "Rows waiting in the outbox");
    metrics::describe_gauge!(
        OUTBOX_OLDEST_AGE,
        metrics::Unit::Seconds,
        "Age of the oldest outbox row"
    );
    metrics::describe_counter!(OUTBOX_PUBLISHED, "Outbox events published and removed");
    metrics::describe_counter!(
        OUTBOX_FAILED,
        "Outbox events the broker did not acknowledge"
    );
    metrics::describe_counter!(
        OUTBOX_REFUSED,
        "Outbox events the producer refused for good; their keys are held back"
    );
    metrics::describe_histogram!(
        OUTBOX_DELAY,
        metrics::Unit::Seconds,
        "Commit to broker acknowledgement"
    );
    metrics::describe_gauge!(
        OUTBOX_LEADER,
        "Whether this process is the publishing relay"
    );
}
