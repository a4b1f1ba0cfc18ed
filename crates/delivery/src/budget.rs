//! What one socket may ask of the server: a budget of frames, and a memory of the conversations
//! it was told it is not in.
//!
//! Every client frame costs messaging or Redis something (a `typing` in a conversation the
//! user is not in is a query; a `resume` naming conversations the socket does not know is one
//! per conversation). The budget is a token bucket per socket: a well-behaved client (a ping
//! every few seconds, typing notices a few times a second, a resume per connection) never
//! meets it; a client over it is answered `rate_limited` with a hint, and one that keeps
//! sending past the refusals is closed with 1008.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use uuid::Uuid;

/// The frame budget of one socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameLimits {
    /// Frames per second, sustained.
    pub(crate) per_second: u32,
    /// Frames that may come at once after a quiet while.
    pub(crate) burst: u32,
}

/// Refused frames in a row after which the socket is closed: a client that reads the
/// `rate_limited` answers and waits never gets here.
pub(crate) const REFUSALS_BEFORE_CLOSE: u32 = 50;

/// What [`Budget::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go ahead.
    Allowed,
    /// Refused; enough will be there again after this long.
    Refused { retry_after: Duration },
    /// Refused too many times in a row: close the socket.
    Abusive,
}

/// A token bucket counted in frames, refilled continuously.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: FrameLimits,
    tokens: f64,
    at: Instant,
    refused_in_a_row: u32,
}

impl Budget {
    /// A full bucket.
    pub(crate) fn new(limits: FrameLimits, now: Instant) -> Self {
        Self {
            limits,
            tokens: f64::from(limits.burst),
            at: now,
            refused_in_a_row: 0,
        }
    }

    /// Takes `cost` frames' worth, or says how long until it could.
    pub(crate) fn take(&mut self, cost: u32, now: Instant) -> Verdict {
        let rate = f64::from(self.limits.per_second.max(1));
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.limits.burst));
        self.at = now;
        let cost = f64::from(cost);
        if self.tokens >= cost {
            self.tokens -= cost;
            self.refused_in_a_row = 0;
            return Verdict::Allowed;
        }
        self.refused_in_a_row += 1;
        if self.refused_in_a_row > REFUSALS_BEFORE_CLOSE {
            return Verdict::Abusive;
        }
        let missing = cost.min(f64::from(self.limits.burst)) - self.tokens;
        Verdict::Refused {
            retry_after: Duration::from_secs_f64(missing / rate).max(Duration::from_millis(1)),
        }
    }
}

/// How long a "not a member" answer is believed without asking again.
pub(crate) const NOT_MEMBER_FOR: Duration = Duration::from_secs(60);
/// Conversations remembered per socket; past it the oldest answers are forgotten.
pub(crate) const NOT_MEMBER_ENTRIES: usize = 256;

/// Conversations messaging said this socket's user is not in, for a while: asking again for the
/// same one is answered here.
#[derive(Debug, Default)]
pub(crate) struct NotMember {
    until: HashMap<Uuid, Instant>,
}

impl NotMember {
    /// Remembers that the user is not in `conversation`.
    pub(crate) fn remember(&mut self, conversation: Uuid, now: Instant) {
        if self.until.len() >= NOT_MEMBER_ENTRIES {
            self.until.retain(|_, until| *until > now);
        }
        if self.until.len() >= NOT_MEMBER_ENTRIES {
            // Still full of live answers: forget the one that ends soonest.
            if let Some(soonest) = self
                .until
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(id, _)| *id)
            {
                self.until.remove(&soonest);
            }
        }
        self.until.insert(conversation, now + NOT_MEMBER_FOR);
    }

    /// Whether messaging said so recently.
    pub(crate) fn knows(&self, conversation: &Uuid, now: Instant) -> bool {
        self.until
            .get(conversation)
            .is_some_and(|until| *until > now)
    }

    /// The user joined after all (a message of it arrived): forget the answer.
    pub(crate) fn forget(&mut self, conversation: &Uuid) {
        self.until.remove(conversation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits {
        per_second: 10,
        burst: 20,
    };

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let start = Instant::now();
        let mut budget = Budget::new(LIMITS, start);
        for _ in 0..20 {
            assert_eq!(budget.take(1, start), Verdict::Allowed);
        }
        let Verdict::Refused { retry_after } = budget.take(1, start) else {
            panic!("the 21st frame at once must be refused");
        };
        assert!(retry_after <= Duration::from_millis(100), "{retry_after:?}");
        assert!(retry_after >= Duration::from_millis(99), "{retry_after:?}");
        // A tenth of a second later one more frame is there.
        assert_eq!(
            budget.take(1, start + Duration::from_millis(100)),
            Verdict::Allowed
        );
    }

    #[test]
    fn a_client_that_keeps_sending_past_the_refusals_is_abusive() {
        let start = Instant::now();
        let mut budget = Budget::new(LIMITS, start);
        for _ in 0..20 {
            budget.take(1, start);
        }
        for _ in 0..REFUSALS_BEFORE_CLOSE {
            assert!(matches!(budget.take(1, start), Verdict::Refused { .. }));
        }
        assert_eq!(budget.take(1, start), Verdict::Abusive);
    }

    #[test]
    fn an_allowed_frame_forgives_the_refusals_before_it() {
        let start = Instant::now();
        let mut budget = Budget::new(LIMITS, start);
        for _ in 0..20 {
            budget.take(1, start);
        }
        for _ in 0..REFUSALS_BEFORE_CLOSE {
            budget.take(1, start);
        }
        let later = start + Duration::from_secs(1);
        assert_eq!(budget.take(1, later), Verdict::Allowed);
        for _ in 0..9 {
            budget.take(1, later);
        }
        assert!(matches!(budget.take(1, later), Verdict::Refused { .. }));
    }

    #[test]
    fn a_cost_above_the_burst_waits_for_a_full_bucket_not_forever() {
        let start = Instant::now();
        let mut budget = Budget::new(LIMITS, start);
        budget.take(20, start);
        let Verdict::Refused { retry_after } = budget.take(500, start) else {
            panic!("refused");
        };
        assert_eq!(retry_after, Duration::from_secs(2));
    }

    #[test]
    fn not_member_answers_expire_and_stay_bounded() {
        let start = Instant::now();
        let mut answers = NotMember::default();
        let first = Uuid::new_v4();
        answers.remember(first, start);
        assert!(answers.knows(&first, start));
        assert!(!answers.knows(&first, start + NOT_MEMBER_FOR));
        for i in 0..(NOT_MEMBER_ENTRIES * 2) {
            answers.remember(
                Uuid::new_v4(),
                start + Duration::from_millis(u64::try_from(i).unwrap_or(0)),
            );
        }
        assert!(answers.until.len() <= NOT_MEMBER_ENTRIES);
        let kept = Uuid::new_v4();
        answers.remember(kept, start + Duration::from_secs(1));
        assert!(answers.knows(&kept, start + Duration::from_secs(1)));
        answers.forget(&kept);
        assert!(!answers.knows(&kept, start + Duration::from_secs(1)));
    }
}
