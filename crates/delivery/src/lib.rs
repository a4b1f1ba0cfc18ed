//! The delivery service: WebSocket sessions, and getting every message to them.
//!
//! It owns nothing durable. Replicas form one consumer group on `realchat.messages.v1`; the
//! replica that owns a partition pushes each event to its own sessions and forwards it to the
//! replicas holding the other recipients' sockets ([`fanout`]). Where sockets are, and who is
//! online, lives in Redis with expiring claims ([`cluster`]), so a replica that dies takes nobody's
//! presence with it for long. Each session keeps its conversations in order and without gaps,
//! filling from messaging's history when it has to ([`session`]).
//!
//! Public routes: `GET /v1/ws` (the gateway proxies it, a load balancer may send it straight
//! here) and `GET /v1/presence`.

#![forbid(unsafe_code)]

mod cluster;
mod error;
mod fanout;
mod hub;
pub mod metrics;
pub mod protocol;
mod session;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{
        Query, State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
    routing::get,
};
use realchat_outbox::{
    KafkaOptions, Topic,
    consumer::{self, ConsumerOptions},
};
use realchat_proto::messaging::v1::ListConversationsRequest;
use realchat_runtime::{
    Shutdown, admin,
    clients::{self, MessagingClient},
    format::timestamp,
    http::ServeOptions,
    jwt::{Verifier, VerifyError},
};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{
    cluster::Cluster,
    error::ApiError,
    hub::Hub,
    session::{SessionOptions, Shared},
};

/// Most users one presence query may name.
pub const MAX_PRESENCE_USERS: usize = 100;

/// Configuration of a delivery replica. Every field has a default that works with `cargo xtask up`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Address of the WebSocket and presence listener.
    #[arg(long, env = "REALCHAT_DELIVERY_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: SocketAddr,

    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long,
        env = "REALCHAT_DELIVERY_ADMIN_ADDR",
        default_value = "127.0.0.1:9184"
    )]
    pub admin_addr: SocketAddr,

    /// Name of this replica; a random suffix is added per process, so a restarted replica is a
    /// new one to the others.
    #[arg(long, env = "REALCHAT_DELIVERY_NODE_ID", default_value = "delivery")]
    pub node_id: String,

    /// gRPC endpoint of the auth service (public keys for tokens).
    #[arg(
        long,
        env = "REALCHAT_AUTH_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub auth_endpoint: String,

    /// gRPC endpoint of the messaging service (history, conversations).
    #[arg(
        long,
        env = "REALCHAT_MESSAGING_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    pub messaging_endpoint: String,

    /// Redis for session routes, presence and forwarding between replicas.
    #[arg(
        long,
        env = "REALCHAT_REDIS_URL",
        default_value = "redis://127.0.0.1:6390"
    )]
    pub redis_url: String,

    /// Prefix of every Redis key and channel delivery uses.
    #[arg(
        long,
        env = "REALCHAT_DELIVERY_REDIS_PREFIX",
        default_value = "realchat:"
    )]
    pub redis_prefix: String,

    /// Consumer group of the delivery replicas on `realchat.messages.v1`.
    #[arg(
        long,
        env = "REALCHAT_DELIVERY_CONSUMER_GROUP",
        default_value = "delivery"
    )]
    pub consumer_group: String,

    /// Origins browsers may open sockets from, comma-separated; empty allows any. Requests
    /// without an `Origin` header (non-browser clients) are always allowed: tokens travel in
    /// headers or the query, never in cookies, so another site cannot borrow a user's session.
    #[arg(
        long,
        env = "REALCHAT_DELIVERY_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub allowed_origins: Vec<String>,

    /// Seconds without any frame from a client before its socket is closed.
    #[arg(long, env = "REALCHAT_DELIVERY_IDLE_TIMEOUT_SECS", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub idle_timeout_secs: u64,

    /// Seconds between the server's pings (answered by every WebSocket client library).
    #[arg(long, env = "REALCHAT_DELIVERY_PING_INTERVAL_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub ping_interval_secs: u64,

    /// Pushes queued per socket; a reader further behind is closed (1013) and resumes.
    #[arg(long, env = "REALCHAT_DELIVERY_SEND_QUEUE", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub send_queue: u64,

    /// Kernel send buffer per socket, in bytes. Small keeps memory per socket bounded and makes
    /// a reader that stopped reading show up quickly (its queue then fills and it is closed).
    #[arg(long, env = "REALCHAT_DELIVERY_SOCKET_SEND_BUFFER", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u64).range(4096..=16 * 1024 * 1024))]
    pub socket_send_buffer: u64,

    /// Presence frames go to the members of a user's direct conversations and of groups of at
    /// most this many members. In a bigger group one socket coming online would mean a frame
    /// (and a route lookup) for every member; their presence is there to ask for instead
    /// (`GET /v1/presence`).
    #[arg(long, env = "REALCHAT_DELIVERY_PRESENCE_MAX_MEMBERS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(2..=100_000))]
    pub presence_max_members: u64,

    /// Seconds between heartbeats that renew this replica's routes and presence claims. A claim
    /// lasts three heartbeats, so a dead replica's users go offline within about four.
    #[arg(long, env = "REALCHAT_DELIVERY_HEARTBEAT_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub heartbeat_secs: u64,

    /// Clock skew allowed when checking token expiry, in seconds.
    #[arg(long, env = "REALCHAT_DELIVERY_TOKEN_LEEWAY_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=30))]
    pub token_leeway_secs: u64,

    #[command(flatten)]
    pub kafka: KafkaOptions,
}

impl Options {
    /// Defaults with the given upstreams, on free ports; for tests and embedding.
    pub fn new(
        auth_endpoint: impl Into<String>,
        messaging_endpoint: impl Into<String>,
        redis_url: impl Into<String>,
        kafka: KafkaOptions,
    ) -> Self {
        Self {
            addr: ([127, 0, 0, 1], 0).into(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            node_id: "delivery".into(),
            auth_endpoint: auth_endpoint.into(),
            messaging_endpoint: messaging_endpoint.into(),
            redis_url: redis_url.into(),
            redis_prefix: "realchat:".into(),
            consumer_group: "delivery".into(),
            allowed_origins: Vec::new(),
            idle_timeout_secs: 90,
            ping_interval_secs: 30,
            send_queue: 1024,
            socket_send_buffer: 64 * 1024,
            presence_max_members: 100,
            heartbeat_secs: 5,
            token_leeway_secs: 5,
            kafka,
        }
    }
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    verifier: Arc<Verifier>,
    allowed_origins: Arc<[String]>,
    sessions: TaskTracker,
    token: CancellationToken,
}

/// A built delivery replica: listeners bound, clients created (they connect lazily).
pub struct Service {
    public: TcpListener,
    admin: TcpListener,
    state: AppState,
    options: Options,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("addr", &self.local_addr())
            .field("replica", &self.replica_id())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Binds the listeners (port 0 picks a free one) and prepares the clients.
    pub async fn build(options: Options) -> anyhow::Result<Self> {
        metrics::describe();
        let auth = clients::auth("REALCHAT_AUTH_ENDPOINT", &options.auth_endpoint)?;
        let messaging =
            clients::messaging("REALCHAT_MESSAGING_ENDPOINT", &options.messaging_endpoint)?;
        let verifier = Arc::new(Verifier::new(
            Arc::new(clients::AuthKeySource::new(auth)),
            Duration::from_secs(options.token_leeway_secs),
        ));
        let replica = format!(
            "{}-{}",
            options.node_id,
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let heartbeat = Duration::from_secs(options.heartbeat_secs);
        let cluster = Cluster::new(
            &options.redis_url,
            &options.redis_prefix,
            &replica,
            heartbeat * 3,
        )
        .with_context(|| format!("REALCHAT_REDIS_URL={:?}", options.redis_url))?;
        if options.kafka.create_topics
            && let Err(error) = options.kafka.ensure_topics().await
        {
            tracing::warn!(
                error = format!("{error:#}"),
                "could not create the Kafka topics; continuing"
            );
        }
        let shared = Arc::new(Shared {
            hub: Arc::new(Hub::new(options.send_queue as usize)),
            cluster,
            messaging,
            options: SessionOptions {
                idle_timeout: Duration::from_secs(options.idle_timeout_secs),
                ping_interval: Duration::from_secs(options.ping_interval_secs),
                write_timeout: Duration::from_secs(10),
                presence_max_members: options.presence_max_members as usize,
            },
            closing: CancellationToken::new(),
            resyncs: tokio::sync::Semaphore::new(32),
        });
        let public = realchat_runtime::net::bind("REALCHAT_DELIVERY_ADDR", options.addr).await?;
        let admin =
            realchat_runtime::net::bind("REALCHAT_DELIVERY_ADMIN_ADDR", options.admin_addr).await?;
        let state = AppState {
            shared,
            verifier,
            allowed_origins: options
                .allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            sessions: TaskTracker::new(),
            token: CancellationToken::new(),
        };
        Ok(Self {
            public,
            admin,
            state,
            options,
        })
    }

    /// Where sockets connect.
    pub fn local_addr(&self) -> SocketAddr {
        realchat_runtime::net::local_addr(&self.public)
    }

    /// Where the admin server listens.
    pub fn admin_addr(&self) -> SocketAddr {
        realchat_runtime::net::local_addr(&self.admin)
    }

    /// This replica's id in Redis.
    pub fn replica_id(&self) -> &str {
        self.state.shared.cluster.replica()
    }

    /// Serves until `shutdown` starts, then drains: stops accepting sockets, lets the consumer
    /// finish its event and commit, then closes every socket with 1001.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let token = shutdown.token();
        let Self {
            public,
            admin,
            mut state,
            options,
        } = self;
        state.token = token.clone();
        let shared = Arc::clone(&state.shared);
        let sessions = state.sessions.clone();

        let messaging = shared.messaging.clone();
        // Ready once forwards can reach this replica: its channel was subscribed (or, if Redis
        // is down at startup, after a grace period: sockets work without Redis, and the
        // forwarding task keeps trying and resyncs every session when it succeeds).
        let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = std::time::Instant::now();
        let channel_up = Arc::clone(&subscribed);
        let readiness = admin::readiness(move || {
            let messaging = messaging.clone();
            let channel_up = channel_up.load(std::sync::atomic::Ordering::Relaxed)
                || started.elapsed() > Duration::from_secs(10);
            async move {
                if !channel_up {
                    return Err("forwarding channel: not subscribed yet".to_owned());
                }
                clients::messaging_answers(&messaging, Duration::from_secs(1)).await
            }
        });
        let serve_options = ServeOptions {
            drain_timeout: shutdown.grace(),
            send_buffer: Some(options.socket_send_buffer as usize),
            ..ServeOptions::default()
        };
        shutdown.spawn(
            "public-server",
            realchat_runtime::http::serve(public, router(state), serve_options, token.clone()),
        );
        shutdown.spawn(
            "admin-server",
            admin::serve(admin, readiness, token.clone()),
        );
        shutdown.spawn(
            "forwarding",
            fanout::forwarding(
                Arc::clone(&shared.hub),
                shared.cluster.clone(),
                subscribed,
                token.clone(),
            ),
        );
        let rejoin = Arc::new(tokio::sync::Notify::new());
        shutdown.spawn(
            "heartbeat",
            heartbeat(
                Arc::clone(&shared),
                Duration::from_secs(options.heartbeat_secs),
                Arc::clone(&rejoin),
                token.clone(),
            ),
        );

        let handler = Arc::new(fanout::Fanout {
            hub: Arc::clone(&shared.hub),
            cluster: shared.cluster.clone(),
        });
        let mut consumer_options =
            ConsumerOptions::new(options.consumer_group.clone(), vec![Topic::Messages]);
        consumer_options.rejoin = Some(rejoin);
        let kafka = options.kafka.clone();
        let (consumer_token, closing) = (token.clone(), shared.closing.clone());
        shutdown.spawn("messages-consumer", async move {
            let result = consumer::run(&kafka, consumer_options, handler, consumer_token).await;
            // Offsets are committed: now the sockets may go (1001), and their clients resume.
            closing.cancel();
            result
        });
        let closing = shared.closing.clone();
        shutdown.spawn("sessions", async move {
            closing.cancelled().await;
            sessions.close();
            sessions.wait().await;
            Ok(())
        });
        shutdown.wait().await.map_err(Into::into)
    }
}

/// How long after finding a replica dead (its claims expired) the consumer group is asked to
/// rebalance. The dead replica has been silent since at least its last renewal, one heartbeat
/// before its claims' `ttl` ran out: so it has already been silent for `ttl - heartbeat`, and
/// only what is left of the broker's session timeout (and a margin) needs waiting. Every second
/// here is a second its partitions' messages wait: in a soak, waiting a whole session timeout
/// after the sweep made a killed replica's conversations wait about 30 s.
fn rejoin_delay(ttl: Duration, heartbeat: Duration) -> Duration {
    let silent = ttl.saturating_sub(heartbeat);
    (realchat_outbox::kafka::CONSUMER_SESSION_TIMEOUT + Duration::from_secs(2))
        .saturating_sub(silent)
}

/// Renews this replica's claims, and sweeps up after replicas that died.
async fn heartbeat(
    shared: Arc<Shared>,
    every: Duration,
    rejoin: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut claimed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Taken before the claims are renewed, so each of them is among the users renewed.
        let unrouted = shared.hub.take_unrouted();
        let users = shared.hub.users();
        if shared.cluster.heartbeat(&users).await.is_err() {
            // Claims that may expire before the next heartbeat gets through leave every user
            // here unrouted meanwhile: the other replicas find no route and forward nothing to
            // them. So all of them resync once they are claimed again.
            let lapsing = claimed.elapsed() + every >= shared.cluster.ttl();
            let missed = if lapsing { users } else { unrouted };
            for user in missed {
                shared.hub.mark_unrouted(user);
            }
            continue;
        }
        claimed = tokio::time::Instant::now();
        // Routed again: what was forwarded while they were not may have missed them.
        shared.hub.deliver(&unrouted, &hub::Push::Resync);
        // Redis answers again: the replicas this one could not forward to catch up.
        if let Ok(told) = shared.cluster.repair_skipped_forwards().await
            && told > 0
        {
            tracing::info!(
                replicas = told,
                "told the other replicas to resync after skipped forwards"
            );
        }
        let Ok(swept) = shared.cluster.sweep().await else {
            continue;
        };
        if swept.found_dead {
            // Make sure the dead replica's partitions move. A broker drops a member that went
            // silent for the session timeout, but only rebalances when a live member asks: so,
            // once the timeout has certainly passed, this replica asks by rejoining. (Asking
            // sooner would have the dead member assigned partitions again.)
            let rejoin = Arc::clone(&rejoin);
            let wait = rejoin_delay(shared.cluster.ttl(), every);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                tracing::info!("a delivery replica died; rebalancing the consumer group");
                rejoin.notify_one();
            });
        }
        for user in swept.offline {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let most = shared.options.presence_max_members;
                let contacts = contacts_of(&shared.messaging, user, most).await;
                session::announce(&shared, user, false, contacts).await;
            });
        }
    }
    // Leaving lets the others know at once; the sessions release their users as they close.
    let _ = shared.cluster.leave().await;
    Ok(())
}

/// Everyone who shares a conversation of at most `most` members with `user`, asked of messaging.
async fn contacts_of(messaging: &MessagingClient, user: Uuid, most: usize) -> Vec<Uuid> {
    let mut messaging = messaging.clone();
    let Ok(response) = messaging
        .list_conversations(ListConversationsRequest {
            caller_id: user.to_string(),
        })
        .await
    else {
        return Vec::new();
    };
    let mut contacts: Vec<Uuid> = response
        .into_inner()
        .conversations
        .into_iter()
        .filter_map(|s| s.conversation)
        .filter(|c| c.member_ids.len() <= most)
        .flat_map(|c| c.member_ids)
        .filter_map(|m| m.parse().ok())
        .filter(|m| *m != user)
        .collect();
    contacts.sort_unstable();
    contacts.dedup();
    contacts
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/ws", get(websocket))
        .route("/v1/presence", get(presence))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

async fn authenticate(
    state: &AppState,
    token: realchat_runtime::bearer::Token<'_>,
) -> Result<realchat_runtime::jwt::Claims, ApiError> {
    use realchat_runtime::bearer::Token;
    let token = match token {
        Token::Present(token) => token,
        Token::Missing => return Err(ApiError::unauthenticated("missing bearer token")),
        Token::Malformed => {
            return Err(ApiError::unauthenticated(
                "authorization must be `Bearer <access_token>`",
            ));
        }
    };
    state
        .verifier
        .verify(token)
        .await
        .map_err(|error| match error {
            VerifyError::Expired => ApiError::token_expired(),
            VerifyError::Invalid(reason) => {
                tracing::debug!(reason, "refused a token");
                ApiError::unauthenticated("invalid token")
            }
            VerifyError::KeysUnavailable(reason) => {
                tracing::warn!(reason, "cannot check tokens: auth keys unavailable");
                ApiError::unavailable("cannot check tokens right now")
            }
        })
}

async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = realchat_runtime::bearer::from_headers_or_query(&headers, uri.query());
    let claims = match authenticate(&state, token).await {
        Ok(claims) => claims,
        Err(error) => return error.into_response(),
    };
    if let Some(origin) = headers.get(header::ORIGIN)
        && !state.allowed_origins.is_empty()
    {
        let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
        if !state.allowed_origins.iter().any(|o| o == origin) {
            return ApiError::forbidden("this origin may not open sockets").into_response();
        }
    }
    if state.token.is_cancelled() {
        return ApiError::unavailable("shutting down").into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::invalid_argument(format!(
                "expected a WebSocket upgrade: {rejection}"
            ))
            .into_response();
        }
    };
    let shared = Arc::clone(&state.shared);
    let sessions = state.sessions.clone();
    upgrade
        .max_message_size(protocol::MAX_FRAME_BYTES)
        .max_frame_size(protocol::MAX_FRAME_BYTES)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            sessions.track_future(session::run(socket, claims.sub, claims.exp, shared))
        })
}

#[derive(Debug, Deserialize)]
struct PresenceQuery {
    user_ids: Option<String>,
}

async fn presence(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PresenceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    authenticate(&state, realchat_runtime::bearer::from_headers(&headers)).await?;
    let Ok(Query(query)) = query else {
        return Err(ApiError::invalid_argument(
            "user_ids must be a comma-separated list of user ids",
        ));
    };
    let raw = query.user_ids.unwrap_or_default();
    let mut users = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let user: Uuid = part
            .parse()
            .map_err(|_| ApiError::invalid_argument(format!("{part:?} is not a user id")))?;
        if !users.contains(&user) {
            users.push(user);
        }
    }
    if users.is_empty() || users.len() > MAX_PRESENCE_USERS {
        return Err(ApiError::invalid_argument(format!(
            "user_ids must name 1 to {MAX_PRESENCE_USERS} users"
        )));
    }
    let found = state
        .shared
        .cluster
        .presence(&users)
        .await
        .map_err(|_| ApiError::unavailable("presence is unavailable right now"))?;
    let presence: Vec<serde_json::Value> = found
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "user_id": p.user,
                "status": if p.online { "online" } else { "offline" },
                "last_seen": p.last_seen_ms.map(timestamp),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "presence": presence })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rebalance_waits_only_for_what_is_left_of_the_session_timeout() {
        // Defaults: claims last three 5 s heartbeats, so a replica found dead has been silent
        // for 10 s already; the broker's 10 s session timeout and a 2 s margin leave 2 s.
        assert_eq!(
            rejoin_delay(Duration::from_secs(15), Duration::from_secs(5)),
            Duration::from_secs(2)
        );
        // Short claims (tests use 1 s heartbeats) leave most of the timeout to wait.
        assert_eq!(
            rejoin_delay(Duration::from_secs(3), Duration::from_secs(1)),
            Duration::from_secs(10)
        );
        // Claims far longer than the timeout: no wait at all.
        assert_eq!(
            rejoin_delay(Duration::from_secs(60), Duration::from_secs(5)),
            Duration::ZERO
        );
    }
}
