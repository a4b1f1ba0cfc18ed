//! Metric names of the messaging service, described once.

/// Sends by `outcome` (`created`, `duplicate`).
pub const SENDS: &str = "messaging_sends_total";
/// Seconds from a send's arrival to its commit (queueing for a writer included).
pub const SEND_SECONDS: &str = "messaging_send_seconds";
/// Sends committed together in one transaction (see `sends`).
pub const SEND_BATCH: &str = "messaging_send_batch_size";
/// Conversations created, by `kind`.
pub const CONVERSATIONS_CREATED: &str = "messaging_conversations_created_total";
/// Member ids messaging had not heard of and asked auth about, by `outcome` (`registered`,
/// `unknown`): how often the registration event was behind the first use of a user.
pub const USERS_CONFIRMED_WITH_AUTH: &str = "messaging_users_confirmed_with_auth_total";

/// Registers the descriptions with the recorder.
pub fn describe() {
    metrics::describe_counter!(SENDS, "Message sends by outcome");
    metrics::describe_histogram!(
        SEND_SECONDS,
        metrics::Unit::Seconds,
        "Time from a send's arrival to its commit"
    );
    metrics::describe_histogram!(
        SEND_BATCH,
        metrics::Unit::Count,
        "Sends committed together in one transaction"
    );
    metrics::describe_counter!(CONVERSATIONS_CREATED, "Conversations created by kind");
    metrics::describe_counter!(
        USERS_CONFIRMED_WITH_AUTH,
        "Member ids not yet known from registration events, looked up in auth, by outcome"
    );
}
