//! Waiting between attempts, for the consumer loop and the outbox relay alike.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sleeps for `duration` unless `shutdown` comes first; whether the whole wait passed.
pub async fn sleep_or_cancel(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(duration) => true,
    }
}

/// The wait before attempt `attempt`: from about 100 ms, doubling, capped at `max`, jittered
/// (`realchat_backoff`), so the relays and consumers of every service do not all retry a broker
/// that just came back in the same instant.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    realchat_backoff::Backoff::new(Duration::from_millis(100), max).delay(attempt)
}
