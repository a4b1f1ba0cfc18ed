//! Metric names of the messaging service, described once.

/// Sends by `outcome` (`created`, `duplicate`).
pub const SENDS: &str = "messaging_sends_total";
/// Seconds one send transaction took, commit included.
pub const SEND_SECONDS: &str = "messaging_send_seconds";
/// Conversations created, by `kind`.
pub const CONVERSATIONS_CREATED: &str = "messaging_conversations_created_total";

/// Registers the descriptions with the recorder.
pub fn describe() {
    metrics::describe_counter!(SENDS, "Message sends by outcome");
    metrics::describe_histogram!(
        SEND_SECONDS,
        metrics::Unit::Seconds,
        "Send transaction time"
    );
    metrics::describe_counter!(CONVERSATIONS_CREATED, "Conversations created by kind");
}
