//! Rate limits in Redis, kept per process while Redis cannot be used.
//!
//! Each limit is a GCRA bucket (the "generic cell rate algorithm": one timestamp per key, no
//! counters to reset): `rate_per_sec` sustained with bursts of `burst`. The check and update run in
//! one Lua script, so replicas of the gateway share the limit exactly.
//!
//! Redis is not allowed to take the API down with it, nor the limits: when it is unreachable or
//! slow the same buckets are kept in this process instead ([`metrics::RATE_LIMIT_FAIL_OPEN`]
//! counts those checks), so each gateway replica enforces the limit on its own, and for a short
//! while the limiter does not even try Redis (a circuit breaker), so an outage costs no latency.
//! The connection manager reconnects in the background and the shared limits resume by
//! themselves.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Once, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics;

/// A sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub rate_per_sec: f64,
    pub burst: u32,
}

/// What the limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; the client may retry after this many seconds.
    Deny {
        retry_after_secs: u64,
    },
}

/// The scopes the gateway limits, as metric labels and key parts.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Per client IP, on register/login/refresh/logout.
    AuthIp,
    /// Per user, on every authenticated request.
    User,
    /// Per user, on creating conversations and adding members: each can put others into a
    /// conversation, and every conversation someone is in costs their lists and sockets.
    Membership,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::AuthIp => "auth_ip",
            Scope::User => "user",
            Scope::Membership => "membership",
        }
    }
}

const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return allow_at - now
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return -1
";

/// How long the limiter stops asking Redis after a failure.
const BREAKER_OPEN_FOR: Duration = Duration::from_secs(1);
/// Longest a limit check may add to a request.
const CHECK_TIMEOUT: Duration = Duration::from_millis(150);
/// Most buckets kept in the process while Redis is away; past it the full ones are forgotten.
const LOCAL_MAX_BUCKETS: usize = 100_000;

/// The Redis-backed limiter, shared by every request.
#[derive(Clone)]
pub struct RateLimiter {
    connection: Option<ConnectionManager>,
    script: Arc<redis::Script>,
    prefix: Arc<str>,
    epoch: Instant,
    /// Milliseconds since `epoch` until which Redis is not asked.
    breaker_until_ms: Arc<AtomicU64>,
    /// The buckets kept here while Redis cannot be used.
    local: Arc<Local>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter on the Redis `client` reaches. Connects lazily: Redis may be down at startup.
    pub fn new(client: redis::Client, prefix: &str) -> Result<Self, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(250)))
            .set_response_timeout(Some(CHECK_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        let limiter = Self {
            connection: Some(connection),
            script: Arc::new(redis::Script::new(GCRA)),
            prefix: prefix.into(),
            epoch: Instant::now(),
            breaker_until_ms: Arc::new(AtomicU64::new(0)),
            local: Arc::default(),
        };
        observe_breaker(limiter.epoch, &limiter.breaker_until_ms);
        Ok(limiter)
    }

    /// A limiter that allows everything (limits switched off).
    pub fn disabled() -> Self {
        Self {
            connection: None,
            script: Arc::new(redis::Script::new(GCRA)),
            prefix: "".into(),
            epoch: Instant::now(),
            breaker_until_ms: Arc::new(AtomicU64::new(0)),
            local: Arc::default(),
        }
    }

    /// Takes one request from `key`'s bucket in `scope`.
    pub async fn check(&self, scope: Scope, key: &str, limit: Limit) -> Decision {
        let Some(connection) = &self.connection else {
            return Decision::Allow;
        };
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let interval_ms = (1000.0 / limit.rate_per_sec.max(0.001)).max(1.0);
        let bucket = format!("{}rl:{}:{key}", self.prefix, scope.as_str());
        if now_ms < self.breaker_until_ms.load(Ordering::Relaxed) {
            return self.locally(scope, bucket, interval_ms as u64, limit.burst, now_ms);
        }
        let mut connection = connection.clone();
        let mut invocation = self.script.key(&bucket);
        invocation.arg(interval_ms).arg(limit.burst.max(1));
        let started = Instant::now();
        let result = tokio::time::timeout(
            CHECK_TIMEOUT,
            invocation.invoke_async::<i64>(&mut connection),
        )
        .await;
        ::metrics::histogram!(metrics::REDIS_SECONDS).record(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(wait_ms)) if wait_ms >= 0 => {
                ::metrics::counter!(metrics::RATE_LIMITED, "scope" => scope.as_str()).increment(1);
                Decision::Deny {
                    retry_after_secs: (wait_ms as u64).div_ceil(1000).max(1),
                }
            }
            Ok(Ok(_)) => Decision::Allow,
            Ok(Err(error)) => {
                self.open_breaker(now_ms, &error.to_string());
                self.locally(scope, bucket, interval_ms as u64, limit.burst, now_ms)
            }
            Err(_) => {
                self.open_breaker(now_ms, "timed out");
                self.locally(scope, bucket, interval_ms as u64, limit.burst, now_ms)
            }
        }
    }

    /// Stops asking Redis for [`BREAKER_OPEN_FOR`].
    fn open_breaker(&self, now_ms: u64, error: &str) {
        let until = now_ms + BREAKER_OPEN_FOR.as_millis() as u64;
        let previous = self.breaker_until_ms.swap(until, Ordering::Relaxed);
        // Log once per breaker opening, not once per request.
        if previous <= now_ms {
            tracing::warn!(
                error,
                "rate limiter cannot reach Redis, keeping the limits in this process"
            );
        }
    }

    /// The check against this process's own bucket, while Redis cannot be used.
    fn locally(
        &self,
        scope: Scope,
        bucket: String,
        interval_ms: u64,
        burst: u32,
        now_ms: u64,
    ) -> Decision {
        ::metrics::counter!(metrics::RATE_LIMIT_FAIL_OPEN, "scope" => scope.as_str()).increment(1);
        let decision = self.local.check(bucket, interval_ms, burst, now_ms);
        if decision != Decision::Allow {
            ::metrics::counter!(metrics::RATE_LIMITED, "scope" => scope.as_str()).increment(1);
        }
        decision
    }

    /// Whether Redis answers a PING (for diagnostics; readiness does not depend on it).
    pub async fn ping(&self) -> bool {
        let Some(connection) = &self.connection else {
            return true;
        };
        let mut connection = connection.clone();
        matches!(
            tokio::time::timeout(
                CHECK_TIMEOUT,
                redis::cmd("PING").query_async::<String>(&mut connection)
            )
            .await,
            Ok(Ok(_))
        )
    }
}

/// Reports at each scrape whether a limiter's breaker is open ([`metrics::REDIS_BREAKER_OPEN`]),
/// from the deadline it already keeps (`until_ms`, milliseconds since `epoch`). One gauge for all
/// the limiters of the process, open if any is: a gateway has one, but tests run several gateways
/// in one process, and each setting the gauge would overwrite the others.
fn observe_breaker(epoch: Instant, until_ms: &Arc<AtomicU64>) {
    static BREAKERS: Mutex<Vec<(Instant, Weak<AtomicU64>)>> = Mutex::new(Vec::new());
    static REGISTER: Once = Once::new();
    BREAKERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((epoch, Arc::downgrade(until_ms)));
    REGISTER.call_once(|| {
        realchat_runtime::collectors::register(|| {
            let mut breakers = BREAKERS.lock().unwrap_or_else(|p| p.into_inner());
            breakers.retain(|(_, until_ms)| until_ms.strong_count() > 0);
            let open = breakers.iter().any(|(epoch, until_ms)| {
                until_ms.upgrade().is_some_and(|until_ms| {
                    (epoch.elapsed().as_millis() as u64) < until_ms.load(Ordering::Relaxed)
                })
            });
            ::metrics::gauge!(metrics::REDIS_BREAKER_OPEN).set(if open { 1.0 } else { 0.0 });
        });
    });
}

/// GCRA buckets in this process: the same rule as the Lua script, for when Redis is away.
#[derive(Debug, Default)]
struct Local {
    /// Each bucket's theoretical arrival time, in milliseconds since the limiter's epoch.
    buckets: Mutex<HashMap<String, u64>>,
}

impl Local {
    fn check(&self, bucket: String, interval_ms: u64, burst: u32, now_ms: u64) -> Decision {
        let interval_ms = interval_ms.max(1);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= LOCAL_MAX_BUCKETS && !buckets.contains_key(&bucket) {
            // Buckets whose time has passed hold nothing: forgetting them changes no decision.
            buckets.retain(|_, tat| *tat > now_ms);
            if buckets.len() >= LOCAL_MAX_BUCKETS {
                buckets.clear();
            }
        }
        let tat = buckets.get(&bucket).copied().unwrap_or(now_ms).max(now_ms);
        let new_tat = tat + interval_ms;
        let allow_at = new_tat.saturating_sub(u64::from(burst.max(1)) * interval_ms);
        if allow_at > now_ms {
            return Decision::Deny {
                retry_after_secs: (allow_at - now_ms).div_ceil(1000).max(1),
            };
        }
        buckets.insert(bucket, new_tat);
        Decision::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_buckets_allow_the_burst_then_the_rate() {
        let local = Local::default();
        // 1 per second, bursts of 2.
        let at = |ms| local.check("k".into(), 1000, 2, ms);
        assert_eq!(at(0), Decision::Allow);
        assert_eq!(at(0), Decision::Allow);
        assert_eq!(
            at(0),
            Decision::Deny {
                retry_after_secs: 1
            }
        );
        assert_eq!(at(1000), Decision::Allow);
        assert_ne!(at(1000), Decision::Allow);
        // Another key has its own bucket.
        assert_eq!(local.check("other".into(), 1000, 2, 1000), Decision::Allow);
    }

    #[test]
    fn local_buckets_are_bounded() {
        let local = Local::default();
        for i in 0..LOCAL_MAX_BUCKETS + 10 {
            let _ = local.check(format!("k{i}"), 1000, 1, 0);
        }
        let len = local
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        assert!(len <= LOCAL_MAX_BUCKETS, "{len}");
    }
}
