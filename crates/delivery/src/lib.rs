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

mod budget;
mod cluster;
mod error;
mod fanout;
mod heartbeat;
mod hub;
pub mod metrics;
mod options;
pub mod protocol;
mod routes;
mod session;

pub use options::Options;
pub use routes::MAX_PRESENCE_USERS;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use realchat_events::{
    Topic,
    consumer::{self, ConsumerOptions},
};
use realchat_runtime::{Shutdown, admin, clients, http::ServeOptions, jwt::Verifier};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{
    cluster::Cluster,
    heartbeat::heartbeat,
    hub::{Hub, Push},
    routes::{AppState, router},
    session::{SessionOptions, Shared},
};

/// Best-effort tasks (presence announcements, typing notices) one replica runs at once, at most:
/// each takes a moment, so this is a burst of thousands of sockets, far above normal use.
const BACKGROUND_TASKS: usize = 4096;
/// Longest the drain waits for them.
const BACKGROUND_DRAIN: Duration = Duration::from_secs(2);

/// A built delivery replica: listeners bound, clients created (they connect lazily).
pub struct Service {
    public: TcpListener,
    admin: TcpListener,
    state: AppState,
    /// Messaging's channel, for the readiness check.
    messaging: tonic::transport::Channel,
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
    pub async fn build(mut options: Options) -> anyhow::Result<Self> {
        metrics::describe();
        options.kafka = options.kafka.prepare().await?;
        // Delivery serves no gRPC: it calls, and accepts no callers.
        let internal = options.internal_tls.load("delivery", &[])?;
        let auth = clients::auth("REALCHAT_AUTH_ENDPOINT", &options.auth_endpoint, &internal)?;
        let messaging_channel = clients::channel(
            "REALCHAT_MESSAGING_ENDPOINT",
            &options.messaging_endpoint,
            &internal,
            "messaging",
        )?;
        let messaging = clients::messaging(messaging_channel.clone());
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
            options.redis.client()?,
            &options.redis_prefix,
            &replica,
            heartbeat * 3,
        )
        .context("REALCHAT_REDIS_URL")?;
        let shared = Arc::new(Shared {
            hub: Arc::new(Hub::new(options.send_queue as usize)),
            cluster,
            messaging: messaging.clone(),
            options: SessionOptions {
                idle_timeout: Duration::from_secs(options.idle_timeout_secs),
                ping_interval: Duration::from_secs(options.ping_interval_secs),
                write_timeout: Duration::from_secs(10),
                presence_max_members: options.presence_max_members as usize,
                frames: budget::FrameLimits {
                    per_second: options.frames_per_second,
                    burst: options.frame_burst,
                },
                max_sockets_per_user: options.max_sockets_per_user,
            },
            closing: CancellationToken::new(),
            resyncs: tokio::sync::Semaphore::new(32),
            background: realchat_runtime::shutdown::Background::new("delivery", BACKGROUND_TASKS),
            verifier,
        });
        hub::observe_queues(&shared.hub);
        let public = realchat_runtime::net::bind("REALCHAT_DELIVERY_ADDR", options.addr).await?;
        let admin =
            realchat_runtime::net::bind("REALCHAT_DELIVERY_ADMIN_ADDR", options.admin_addr).await?;
        let state = AppState {
            shared,
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
            messaging: messaging_channel,
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
        tracing::info!(addr = %self.local_addr(), admin = %self.admin_addr(), replica = %self.replica_id(), "delivery replica started");
        let Self {
            public,
            admin,
            mut state,
            messaging,
            options,
        } = self;
        state.token = token.clone();
        let shared = Arc::clone(&state.shared);
        let sessions = state.sessions.clone();

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
                clients::serving("messaging", messaging, Duration::from_secs(1)).await
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
        shutdown.spawn(
            "revocations",
            close_revoked(Arc::clone(&shared), token.clone()),
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
        let (background, background_done) = (shared.background.clone(), shared.closing.clone());
        shutdown.spawn("background", async move {
            background_done.cancelled().await;
            // Best effort: a notice stuck on a hung Redis is not worth failing the drain for.
            if tokio::time::timeout(BACKGROUND_DRAIN, background.drained())
                .await
                .is_err()
            {
                tracing::warn!(
                    left = background.running(),
                    "background tasks abandoned at shutdown"
                );
            }
            Ok(())
        });
        shutdown.wait().await.map_err(Into::into)
    }
}

/// Learns of revoked sessions (from auth, every [`Verifier::REVOCATION_POLL`]) and closes
/// their sockets on this replica with 1008; their tokens are refused from then on.
async fn close_revoked(shared: Arc<Shared>, token: CancellationToken) -> anyhow::Result<()> {
    use tokio::sync::broadcast::error::RecvError;
    let mut revoked = shared.verifier.revocations();
    let follow = shared.verifier.follow_revocations(token);
    tokio::pin!(follow);
    loop {
        tokio::select! {
            () = &mut follow => return Ok(()),
            session = revoked.recv() => match session {
                Ok(session) => {
                    shared.hub.deliver([&session.user], &Push::Revoked);
                }
                // Too many at once to tell user by user: every session checks its own.
                Err(RecvError::Lagged(_)) => shared.hub.broadcast(&Push::Revoked),
                Err(RecvError::Closed) => return Ok(()),
            },
        }
    }
}

impl realchat_runtime::service::Service for Service {
    type Options = Options;
    const NAME: &'static str = "delivery";
    const ABOUT: &'static str = "RealChat delivery service: WebSockets, the consumer group that fans messages out, presence.";

    fn admin_addr_of(options: &Options) -> SocketAddr {
        options.admin_addr
    }

    async fn serve(options: Options, shutdown: Shutdown) -> anyhow::Result<()> {
        Service::build(options).await?.run(shutdown).await
    }
}
