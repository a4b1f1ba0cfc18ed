//! Metric names of the profile service, described once.

/// Profiles created from registration events.
pub const PROFILES_CREATED: &str = "profile_profiles_created_total";
/// Profiles created from auth's record because their registration event had not arrived.
pub const PROFILES_FILLED_FROM_AUTH: &str = "profile_profiles_filled_from_auth_total";
/// Profile edits.
pub const PROFILES_UPDATED: &str = "profile_profiles_updated_total";
/// Seconds one directory search took.
pub const SEARCH_SECONDS: &str = "profile_search_seconds";

/// Registers the descriptions with the recorder.
pub fn describe() {
    metrics::describe_counter!(PROFILES_CREATED, "Profiles created from user.registered");
    metrics::describe_counter!(
        PROFILES_FILLED_FROM_AUTH,
        "Profiles created from auth's record ahead of their registration event"
    );
    metrics::describe_counter!(PROFILES_UPDATED, "Profile edits");
    metrics::describe_histogram!(
        SEARCH_SECONDS,
        metrics::Unit::Seconds,
        "Directory search time"
    );
}
