//! How long to wait before trying again.
//!
//! Every retry loop in RealChat (the outbox relay, the consumer loop, the client's sends and its
//! socket's reconnects) waits by the same rule: a first step that doubles with each attempt up to
//! a cap, and a random part, so that the many clients an outage disconnected together do not
//! all come back in the same instant and knock the recovering server over again.

#![forbid(unsafe_code)]

use std::time::Duration;

use rand::Rng as _;

/// Exponential backoff, capped, with "equal jitter": attempt `n` waits between half and all of
/// `first * 2^(n-1)` (at most `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first attempt's wait.
    pub first: Duration,
    /// The ceiling no wait goes past.
    pub max: Duration,
}

impl Backoff {
    /// Doubling from `first`, capped at `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// The ceiling of attempt `attempt`'s wait (attempts count from 1): `first`, twice that, and
    /// so on, never more than `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.first
            .checked_mul(1 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The wait before attempt `attempt`: a random point between half the ceiling and all of it.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(rand::thread_rng().r#gen::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

    #[test]
    fn the_ceiling_doubles_from_the_first_step_and_stops_at_the_cap() {
        let ceilings: Vec<u128> = [1, 2, 3, 5, 6, 40, u32::MAX]
            .into_iter()
            .map(|attempt| BACKOFF.ceiling(attempt).as_millis())
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 1600, 2000, 2000, 2000]);
        // Attempt 0 is treated as the first.
        assert_eq!(BACKOFF.ceiling(0), Duration::from_millis(100));
    }

    #[test]
    fn every_wait_lies_between_half_the_ceiling_and_the_ceiling_and_they_spread() {
        for attempt in 1..10 {
            let ceiling = BACKOFF.ceiling(attempt);
            let waits: Vec<Duration> = (0..200).map(|_| BACKOFF.delay(attempt)).collect();
            assert!(
                waits.iter().all(|w| *w >= ceiling / 2 && *w <= ceiling),
                "{waits:?}"
            );
            let (low, high) = (waits.iter().min(), waits.iter().max());
            assert!(low < high, "200 waits all the same: {low:?}");
        }
    }
}
