//! Metric names of the consumer loop, described once.

/// Events a consumer handled, by `topic` and `outcome` (`ok`, `retried`, `dead_lettered`).
pub const CONSUMED: &str = "consumer_events_total";
/// Seconds a handler took per event, by `topic`.
pub const HANDLE_SECONDS: &str = "consumer_handle_seconds";

/// Partitions assigned to this consumer-group member, by `group` (sampled every 5 s).
pub const ASSIGNED_PARTITIONS: &str = "consumer_assigned_partitions";
/// Consumer-group members replaced by a new one, by `group` and `reason` (`brokers_lost`,
/// `unassigned`: stuck without partitions while events waited, `rejoin_requested`).
pub const REBUILDS: &str = "consumer_rebuilds_total";

/// Registers the descriptions with the recorder.
pub fn describe() {
    crate::stats::describe();
    metrics::describe_counter!(CONSUMED, "Consumed events by outcome");
    metrics::describe_histogram!(
        HANDLE_SECONDS,
        metrics::Unit::Seconds,
        "Handler time per event"
    );
    metrics::describe_gauge!(
        ASSIGNED_PARTITIONS,
        "Partitions assigned to this consumer-group member"
    );
    metrics::describe_counter!(
        REBUILDS,
        "Consumer-group members replaced by a new client, by reason"
    );
}
