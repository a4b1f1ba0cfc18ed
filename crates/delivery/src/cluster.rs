//! What delivery replicas share through Redis: where users' sockets are, who is online, and the
//! channels replicas forward to each other on.
//!
//! Keys (all under the configured prefix):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `routes:<user>` | sorted set | the replicas holding the user's sockets, scored by when that claim expires (ms) |
//! | `seen:<user>` | string | when the user was last seen online (ms) |
//! | `replicas` | sorted set | live replicas, scored by when their heartbeat expires |
//! | `replica:<id>:users` | set | the users a replica holds, so a survivor can clean up after it |
//! | `fwd:<id>` | pub/sub channel | [`Forward`]s for the replica `id` |
//! | `fwd:*everyone` | pub/sub channel | what every replica hears: a `Resync` after skipped forwards |
//!
//! Claims expire unless renewed, so a replica that dies without a word stops being a route and
//! its users go offline within [`Cluster::ttl`] plus one sweep. A live replica renews every claim
//! it holds on each heartbeat, which is also how routes and presence come back by themselves after
//! Redis lost its data or was unreachable.
//!
//! Redis is never allowed to stall delivery: every call has a short timeout, and after a failure a
//! breaker skips Redis for a moment, so an outage costs errors (counted) rather than latency.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prost::Message as _;
use realchat_proto::delivery::v1::{Forward, Resync, forward};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use uuid::Uuid;

use crate::metrics;

/// Longest any one Redis call may take.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long Redis is not asked after a failure.
const BREAKER_OPEN_FOR: Duration = Duration::from_secs(1);
/// How long a replica's user list outlives it, for a survivor to sweep.
const USERS_SET_TTL_MS: u64 = 3_600_000;
/// How long a dead replica stays in `replicas` after its last heartbeat expired.
const DEAD_LISTED_MS: u64 = 60_000;
/// How long a user's socket counts are kept after the last socket opened or closed. Counts of
/// replicas that died are dropped sooner, when their route to the user has expired.
const SOCKETS_TTL_MS: u64 = 3_600_000;
/// How long `seen:<user>` is kept.
const SEEN_TTL_MS: u64 = 30 * 24 * 3_600_000;

/// Why a Redis call did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {CALL_TIMEOUT:?}")]
    Timeout,
    #[error("redis is skipped for a moment after a failure")]
    BreakerOpen,
}

/// Adds a replica's claim on a user; returns 1 when no other replica held one (the user came
/// online). KEYS: routes, replica users, seen. ARGV: replica, now, expiry, key ttl, user.
const CLAIM: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local others = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then others = others - 1 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[6])
if others == 0 then return 1 end
return 0
";

/// Drops a replica's claim on a user; returns the claims left (0: the user went offline).
/// KEYS: routes, replica users, seen. ARGV: replica, now, user, seen ttl.
const RELEASE: &str = r"
local had = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local left = redis.call('ZCARD', KEYS[1])
if had == 1 then redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[4]) end
if had == 0 then return -1 end
return left
";

/// Records this replica's sockets of a user and says whether the user's sockets, across the
/// live replicas, are within the cap; returns 1 if so. Over the cap, the count goes back to
/// what it was. Counts of replicas whose route to the user expired (dead ones) are dropped.
/// KEYS: sockets, routes. ARGV: replica, its sockets of the user with the new one, now, cap,
/// key ttl.
const OPEN_SOCKET: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local total = 0
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do
  local replica, count = counts[i], tonumber(counts[i + 1])
  if replica == ARGV[1] then
    total = total + count
  else
    local expiry = redis.call('ZSCORE', KEYS[2], replica)
    if expiry and tonumber(expiry) > tonumber(ARGV[3]) then
      total = total + count
    else
      redis.call('HDEL', KEYS[1], replica)
    end
  end
end
if total > tonumber(ARGV[4]) then
  if tonumber(ARGV[2]) > 1 then
    redis.call('HSET', KEYS[1], ARGV[1], tonumber(ARGV[2]) - 1)
  else
    redis.call('HDEL', KEYS[1], ARGV[1])
  end
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

/// What a sweep found.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    /// Users of dead replicas who have no other socket: they went offline.
    pub(crate) offline: Vec<Uuid>,
    /// A replica stopped heartbeating since the last sweep.
    pub(crate) found_dead: bool,
}

/// One user's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Presence {
    pub(crate) user: Uuid,
    pub(crate) online: bool,
    /// Milliseconds since the epoch; `None` if never seen.
    pub(crate) last_seen_ms: Option<i64>,
}

/// The node a replica runs as (`REALCHAT_DELIVERY_NODE_ID`): its id without the suffix each
/// process adds, so a metric labelled with it keeps one series per node across restarts.
pub(crate) fn node_of(replica: &str) -> &str {
    replica.rsplit_once('-').map_or(replica, |(node, _)| node)
}

/// This replica's view of the shared state.
#[derive(Clone)]
pub(crate) struct Cluster {
    client: redis::Client,
    connection: ConnectionManager,
    prefix: Arc<str>,
    replica: Arc<str>,
    ttl: Duration,
    claim: Arc<redis::Script>,
    release: Arc<redis::Script>,
    open_socket: Arc<redis::Script>,
    epoch: Instant,
    breaker_until_ms: Arc<AtomicU64>,
    /// Dead replicas this replica already noticed.
    seen_dead: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Set when forwards to other replicas were skipped; see [`Cluster::repair_skipped_forwards`].
    skipped_forwards: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Cluster {
    /// A view on the Redis at `url` for the replica `replica`, whose claims last `ttl`.
    /// Connects lazily: Redis may be down at startup.
    pub(crate) fn new(
        client: redis::Client,
        prefix: &str,
        replica: &str,
        ttl: Duration,
    ) -> Result<Self, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            client,
            connection,
            prefix: prefix.into(),
            replica: replica.into(),
            ttl,
            claim: Arc::new(redis::Script::new(CLAIM)),
            release: Arc::new(redis::Script::new(RELEASE)),
            open_socket: Arc::new(redis::Script::new(OPEN_SOCKET)),
            epoch: Instant::now(),
            breaker_until_ms: Arc::new(AtomicU64::new(0)),
            seen_dead: Arc::default(),
            skipped_forwards: Arc::default(),
        })
    }

    /// This replica's id.
    pub(crate) fn replica(&self) -> &str {
        &self.replica
    }

    /// How long a claim lasts unless renewed.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The Redis client, for the forwarding subscription.
    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}{parts}", self.prefix)
    }

    fn routes_key(&self, user: &Uuid) -> String {
        self.key(format_args!("routes:{user}"))
    }

    fn seen_key(&self, user: &Uuid) -> String {
        self.key(format_args!("seen:{user}"))
    }

    fn sockets_key(&self, user: &Uuid) -> String {
        self.key(format_args!("sockets:{user}"))
    }

    fn users_key(&self, replica: &str) -> String {
        self.key(format_args!("replica:{replica}:users"))
    }

    /// The forwarding channel of `replica`.
    pub(crate) fn channel(&self, replica: &str) -> String {
        self.key(format_args!("fwd:{replica}"))
    }

    /// Runs one Redis call under the timeout and the breaker, and times it.
    async fn call<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Error> {
        let elapsed = self.epoch.elapsed().as_millis() as u64;
        if elapsed < self.breaker_until_ms.load(Ordering::Relaxed) {
            ::metrics::counter!(metrics::REDIS_ERRORS, "op" => op).increment(1);
            return Err(Error::BreakerOpen);
        }
        let started = Instant::now();
        let answered = tokio::time::timeout(CALL_TIMEOUT, call).await;
        ::metrics::histogram!(metrics::REDIS_SECONDS, "op" => op)
            .record(started.elapsed().as_secs_f64());
        let result = match answered {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => Error::Redis(error),
            Err(_) => Error::Timeout,
        };
        ::metrics::counter!(metrics::REDIS_ERRORS, "op" => op).increment(1);
        let until = elapsed + BREAKER_OPEN_FOR.as_millis() as u64;
        if self.breaker_until_ms.swap(until, Ordering::Relaxed) <= elapsed {
            // Once per breaker opening, not once per call.
            tracing::warn!(error = %result, op, "Redis call failed; skipping Redis for a moment");
        }
        Err(result)
    }

    /// Claims `user` for this replica; true when the user just came online.
    pub(crate) async fn claim(&self, user: &Uuid) -> Result<bool, Error> {
        let now = now_ms();
        let ttl = self.ttl.as_millis() as u64;
        let mut invocation = self.claim.key(self.routes_key(user));
        invocation
            .key(self.users_key(&self.replica))
            .key(self.seen_key(user))
            .arg(&*self.replica)
            .arg(now)
            .arg(now + ttl)
            .arg(ttl * 2)
            .arg(user.to_string())
            .arg(SEEN_TTL_MS);
        let mut connection = self.connection.clone();
        let came_online: i64 = self
            .call("claim", invocation.invoke_async(&mut connection))
            .await?;
        Ok(came_online == 1)
    }

    /// Records that this replica has `here` sockets of `user`, the one being opened included;
    /// false when that puts the user's sockets across the live replicas over `cap` (the count
    /// is then left as it was).
    pub(crate) async fn open_socket(
        &self,
        user: &Uuid,
        here: u32,
        cap: u32,
    ) -> Result<bool, Error> {
        let mut invocation = self.open_socket.key(self.sockets_key(user));
        invocation
            .key(self.routes_key(user))
            .arg(&*self.replica)
            .arg(here)
            .arg(now_ms())
            .arg(cap)
            .arg(SOCKETS_TTL_MS);
        let mut connection = self.connection.clone();
        let within: i64 = self
            .call("open_socket", invocation.invoke_async(&mut connection))
            .await?;
        Ok(within == 1)
    }

    /// Records that this replica now has `here` sockets of `user` (one closed).
    pub(crate) async fn sockets_here(&self, user: &Uuid, here: u32) -> Result<(), Error> {
        let mut command = redis::cmd(if here == 0 { "HDEL" } else { "HSET" });
        command.arg(self.sockets_key(user)).arg(&*self.replica);
        if here > 0 {
            command.arg(here);
        }
        let mut connection = self.connection.clone();
        self.call("sockets_here", command.query_async::<()>(&mut connection))
            .await
    }

    /// Releases this replica's claim on `user`; true when the user just went offline.
    pub(crate) async fn release(&self, user: &Uuid) -> Result<bool, Error> {
        self.release_for(&self.replica.clone(), user).await
    }

    async fn release_for(&self, replica: &str, user: &Uuid) -> Result<bool, Error> {
        let mut invocation = self.release.key(self.routes_key(user));
        invocation
            .key(self.users_key(replica))
            .key(self.seen_key(user))
            .arg(replica)
            .arg(now_ms())
            .arg(user.to_string())
            .arg(SEEN_TTL_MS);
        let mut connection = self.connection.clone();
        let left: i64 = self
            .call("release", invocation.invoke_async(&mut connection))
            .await?;
        Ok(left == 0)
    }

    /// Renews this replica's claims on `users` and its own liveness.
    pub(crate) async fn heartbeat(&self, users: &[Uuid]) -> Result<(), Error> {
        let now = now_ms();
        let ttl = self.ttl.as_millis() as u64;
        let users_key = self.users_key(&self.replica);
        for chunk in users.chunks(2_000) {
            let mut pipe = redis::pipe();
            for user in chunk {
                let routes = self.routes_key(user);
                pipe.cmd("ZADD")
                    .arg(&routes)
                    .arg(now + ttl)
                    .arg(&*self.replica)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&routes)
                    .arg(ttl * 2)
                    .ignore()
                    .cmd("SET")
                    .arg(self.seen_key(user))
                    .arg(now)
                    .arg("PX")
                    .arg(SEEN_TTL_MS)
                    .ignore();
            }
            pipe.cmd("SADD")
                .arg(&users_key)
                .arg(chunk.iter().map(Uuid::to_string).collect::<Vec<_>>())
                .ignore();
            let mut connection = self.connection.clone();
            self.call("heartbeat", pipe.query_async::<()>(&mut connection))
                .await?;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(self.key(format_args!("replicas")))
            .arg(now + ttl)
            .arg(&*self.replica)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&users_key)
            .arg(USERS_SET_TTL_MS)
            .ignore();
        let mut connection = self.connection.clone();
        self.call("heartbeat", pipe.query_async::<()>(&mut connection))
            .await
    }

    /// Cleans up after replicas whose heartbeat expired; returns the users that went offline and
    /// whether any replica was found dead. Each dead replica is swept by one survivor (a short
    /// lock), the others skip it, but every survivor learns that one died.
    pub(crate) async fn sweep(&self) -> Result<Swept, Error> {
        let replicas_key = self.key(format_args!("replicas"));
        let mut connection = self.connection.clone();
        let dead: Vec<String> = self
            .call(
                "sweep",
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&replicas_key)
                    .arg("-inf")
                    .arg(now_ms())
                    .query_async(&mut connection),
            )
            .await?;
        let mut offline = Vec::new();
        let mut found_dead = false;
        for replica in dead.iter().filter(|r| **r != *self.replica) {
            found_dead |= self
                .seen_dead
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(replica.clone());
            let lock = self.key(format_args!("sweep:{replica}"));
            let won: Option<String> = self
                .call(
                    "sweep",
                    redis::cmd("SET")
                        .arg(&lock)
                        .arg(&*self.replica)
                        .arg("NX")
                        .arg("PX")
                        .arg(60_000)
                        .query_async(&mut connection),
                )
                .await?;
            if won.is_none() {
                continue;
            }
            let users: Vec<String> = self
                .call(
                    "sweep",
                    redis::cmd("SMEMBERS")
                        .arg(self.users_key(replica))
                        .query_async(&mut connection),
                )
                .await?;
            for user in users.iter().filter_map(|u| u.parse::<Uuid>().ok()) {
                if self.release_for(replica, &user).await? {
                    offline.push(user);
                }
            }
            tracing::info!(replica = %replica, users = users.len(), "swept a replica that stopped heartbeating");
            self.call(
                "sweep",
                redis::cmd("DEL")
                    .arg(self.users_key(replica))
                    .query_async::<()>(&mut connection),
            )
            .await?;
        }
        // Dead replicas stay listed for a minute, so every survivor notices each death.
        self.call(
            "sweep",
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(&replicas_key)
                .arg("-inf")
                .arg(now_ms().saturating_sub(DEAD_LISTED_MS))
                .query_async::<()>(&mut connection),
        )
        .await?;
        Ok(Swept {
            offline,
            found_dead,
        })
    }

    /// Leaves the cluster on a clean shutdown: the replica is no longer a live one.
    pub(crate) async fn leave(&self) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM")
            .arg(self.key(format_args!("replicas")))
            .arg(&*self.replica)
            .ignore();
        let mut connection = self.connection.clone();
        self.call("leave", pipe.query_async::<()>(&mut connection))
            .await
    }

    /// The other replicas holding sockets of `users`, with the users each holds.
    pub(crate) async fn routes(&self, users: &[Uuid]) -> Result<HashMap<String, Vec<Uuid>>, Error> {
        let now = now_ms();
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(self.routes_key(user))
                .arg(now)
                .arg("+inf");
        }
        let mut connection = self.connection.clone();
        let replicas: Vec<Vec<String>> = self
            .call("routes", pipe.query_async(&mut connection))
            .await?;
        let mut by_replica: HashMap<String, Vec<Uuid>> = HashMap::new();
        for (user, replicas) in users.iter().zip(replicas) {
            for replica in replicas {
                if replica != *self.replica {
                    by_replica.entry(replica).or_default().push(*user);
                }
            }
        }
        Ok(by_replica)
    }

    /// Notes that forwards were skipped (their routes could not be read, or publishing failed).
    pub(crate) fn skipped_forwards(&self) {
        self.skipped_forwards.store(true, Ordering::Relaxed);
    }

    /// After forwards were skipped, tells every other replica to resync its sessions.
    ///
    /// A replica whose subscription dropped resyncs by itself when it is back; but Redis can fail
    /// this replica's calls (a timeout, the breaker) while the others' subscriptions stay up, and
    /// then nothing else tells them: their sessions would repair the gap only when the next
    /// message of the conversation comes, which may be never. The `Resync` goes on the channel
    /// every replica listens to, so it needs no list of replicas (which a restarted Redis has
    /// lost until they heartbeat again). Returns how many replicas heard it (this one included).
    pub(crate) async fn repair_skipped_forwards(&self) -> Result<i64, Error> {
        if !self.skipped_forwards.swap(false, Ordering::Relaxed) {
            return Ok(0);
        }
        let resync = Forward {
            user_ids: Vec::new(),
            item: Some(forward::Item::Resync(Resync {
                from_replica: self.replica.to_string(),
            })),
        };
        let mut connection = self.connection.clone();
        let told = self
            .call(
                "resync",
                redis::cmd("PUBLISH")
                    .arg(self.everyone_channel())
                    .arg(resync.encode_to_vec())
                    .query_async::<i64>(&mut connection),
            )
            .await;
        if told.is_err() {
            // Still owed: try again on the next heartbeat.
            self.skipped_forwards();
        }
        told
    }

    /// The channel every replica listens to besides its own.
    pub(crate) fn everyone_channel(&self) -> String {
        self.key(format_args!("fwd:*everyone"))
    }

    /// Publishes each forward to its replica, in the order given, in one round trip; for each,
    /// false when nobody listened (the replica is gone).
    ///
    /// Order matters: forwards of one conversation must reach a replica in seq order, and a
    /// pipeline is executed by Redis as it was written.
    pub(crate) async fn forward_all(
        &self,
        forwards: &[(String, Forward)],
    ) -> Result<Vec<bool>, Error> {
        let mut pipe = redis::pipe();
        for (replica, forward) in forwards {
            pipe.cmd("PUBLISH")
                .arg(self.channel(replica))
                .arg(forward.encode_to_vec());
        }
        let mut connection = self.connection.clone();
        let listeners: Vec<i64> = self
            .call("forward", pipe.query_async(&mut connection))
            .await?;
        Ok(listeners.into_iter().map(|n| n > 0).collect())
    }

    /// The presence of `users`.
    pub(crate) async fn presence(&self, users: &[Uuid]) -> Result<Vec<Presence>, Error> {
        let now = now_ms();
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("ZCOUNT")
                .arg(self.routes_key(user))
                .arg(now)
                .arg("+inf")
                .cmd("GET")
                .arg(self.seen_key(user));
        }
        let mut connection = self.connection.clone();
        let answers: Vec<redis::Value> = self
            .call("presence", pipe.query_async(&mut connection))
            .await?;
        Ok(users
            .iter()
            .zip(answers.chunks(2))
            .map(|(user, answer)| {
                let claims: i64 = answer
                    .first()
                    .and_then(|v| redis::from_redis_value_ref(v).ok())
                    .unwrap_or(0);
                let seen: Option<i64> = answer
                    .get(1)
                    .and_then(|v| redis::from_redis_value_ref::<Option<i64>>(v).ok())
                    .flatten();
                Presence {
                    user: *user,
                    online: claims > 0,
                    last_seen_ms: seen,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_s_node_is_its_id_without_the_process_suffix() {
        assert_eq!(node_of("delivery-2-0a1b2c3d"), "delivery-2");
        assert_eq!(node_of("survivor-0a1b2c3d"), "survivor");
        assert_eq!(node_of("plain"), "plain");
    }
}
