//! Metric names of the auth service, described once.

/// Registrations, by `outcome` (`created`, `taken`, `invalid`).
pub const REGISTRATIONS: &str = "auth_registrations_total";
/// Logins, by `outcome` (`ok`, `invalid_credentials`).
pub const LOGINS: &str = "auth_logins_total";
/// Refreshes, by `outcome` (`ok`, `invalid`, `reuse_detected`).
pub const REFRESHES: &str = "auth_refreshes_total";
/// Seconds spent hashing or verifying one password.
pub const PASSWORD_HASH_SECONDS: &str = "auth_password_hash_seconds";

/// Registers the descriptions with the recorder.
pub fn describe() {
    metrics::describe_counter!(REGISTRATIONS, "Registrations by outcome");
    metrics::describe_counter!(LOGINS, "Login attempts by outcome");
    metrics::describe_counter!(REFRESHES, "Refresh-token exchanges by outcome");
    metrics::describe_histogram!(
        PASSWORD_HASH_SECONDS,
        metrics::Unit::Seconds,
        "Time to hash or verify one password"
    );
}
