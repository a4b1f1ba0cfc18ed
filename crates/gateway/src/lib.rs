//! The gateway: RealChat's public HTTP edge.
//!
//! It owns no data. It serves API.md on one port, checks access tokens itself with auth's public
//! keys ([`realchat_runtime::jwt::Verifier`]), applies rate limits in Redis ([`rate_limit`]),
//! bounds every request (64 KiB bodies, header-read and request timeouts), and turns REST calls
//! into gRPC calls on the services. Every error leaves through [`error::ApiError`].

#![forbid(unsafe_code)]

pub mod error;
pub mod extract;
pub mod metrics;
mod middleware;
mod openapi;
pub mod rate_limit;
mod routes;
mod upstream;
mod ws_proxy;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware::{from_fn, from_fn_with_state},
    response::IntoResponse,
    routing::{delete, get, post},
};
use realchat_proto::auth::v1::GetJwksRequest;
use realchat_runtime::{
    Shutdown,
    admin::{self, Readiness},
    clients,
    http::ServeOptions,
    jwt::Verifier,
    redis_client::RedisOptions,
    tls::InternalTlsOptions,
};
use tokio::net::TcpListener;

use crate::rate_limit::{Limit, RateLimiter};

/// Largest request body the API accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub(crate) use realchat_runtime::clients::{AuthClient, MessagingClient, ProfileClient};

/// Configuration of the gateway. Every field has a default that works with `cargo xtask up`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Address of the public API.
    #[arg(long, env = "REALCHAT_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long,
        env = "REALCHAT_GATEWAY_ADMIN_ADDR",
        default_value = "127.0.0.1:9180"
    )]
    pub admin_addr: SocketAddr,

    /// gRPC endpoint of the auth service.
    #[arg(
        long,
        env = "REALCHAT_AUTH_ENDPOINT",
        default_value = "http://127.0.0.1:7051"
    )]
    pub auth_endpoint: String,

    /// gRPC endpoint of the messaging service.
    #[arg(
        long,
        env = "REALCHAT_MESSAGING_ENDPOINT",
        default_value = "http://127.0.0.1:7052"
    )]
    pub messaging_endpoint: String,

    /// gRPC endpoint of the profile service.
    #[arg(
        long,
        env = "REALCHAT_PROFILE_ENDPOINT",
        default_value = "http://127.0.0.1:7053"
    )]
    pub profile_endpoint: String,

    /// Mutual TLS on the calls to auth, messaging and profile.
    #[command(flatten)]
    pub internal_tls: InternalTlsOptions,

    /// Delivery replicas that serve `/v1/ws` and `/v1/presence`, comma-separated; each new
    /// socket goes to the next one that answers.
    #[arg(
        long,
        env = "REALCHAT_DELIVERY_ENDPOINTS",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8081"
    )]
    pub delivery_endpoints: Vec<String>,

    /// Redis for rate limits. When it is unreachable, requests pass (and are counted).
    #[command(flatten)]
    pub redis: RedisOptions,

    /// Prefix of every Redis key the gateway writes.
    #[arg(
        long,
        env = "REALCHAT_GATEWAY_REDIS_PREFIX",
        default_value = "realchat:"
    )]
    pub redis_prefix: String,

    /// Apply rate limits at all.
    #[arg(long, env = "REALCHAT_GATEWAY_RATE_LIMITS", default_value_t = true, action = clap::ArgAction::Set)]
    pub rate_limits: bool,

    /// Sustained requests per second per client IP on register/login/refresh/logout.
    #[arg(long, env = "REALCHAT_GATEWAY_AUTH_IP_RATE", default_value_t = 5.0)]
    pub auth_ip_rate: f64,

    /// Burst of requests per client IP on register/login/refresh/logout.
    #[arg(long, env = "REALCHAT_GATEWAY_AUTH_IP_BURST", default_value_t = 50)]
    pub auth_ip_burst: u32,

    /// Sustained requests per second per user on every authenticated endpoint.
    #[arg(long, env = "REALCHAT_GATEWAY_USER_RATE", default_value_t = 50.0)]
    pub user_rate: f64,

    /// Burst of requests per user on every authenticated endpoint.
    #[arg(long, env = "REALCHAT_GATEWAY_USER_BURST", default_value_t = 200)]
    pub user_burst: u32,

    /// Sustained conversations created and members added per second per user: each puts people
    /// into a conversation, which every list and socket of theirs then carries.
    #[arg(long, env = "REALCHAT_GATEWAY_MEMBERSHIP_RATE", default_value_t = 0.2)]
    pub membership_rate: f64,

    /// Burst of conversations created and members added per user.
    #[arg(long, env = "REALCHAT_GATEWAY_MEMBERSHIP_BURST", default_value_t = 30)]
    pub membership_burst: u32,

    /// Proxies in front of the gateway that append to `X-Forwarded-For` (a load balancer: 1). The
    /// client is the address the farthest of them saw; what is left of it in the header is the
    /// client's own say and is ignored. 0: the TCP peer is the client.
    #[arg(long, env = "REALCHAT_GATEWAY_TRUSTED_PROXY_HOPS", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=8))]
    pub trusted_proxy_hops: u8,

    /// Longest a whole request may take, body included, in seconds.
    #[arg(long, env = "REALCHAT_GATEWAY_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub request_timeout_secs: u64,

    /// Requests in progress at once, at most; past it a request is refused at once with 503
    /// `unavailable` (and `Retry-After`), so an overloaded backend makes clients back off instead
    /// of queueing requests (and their memory) in the gateway.
    #[arg(long, env = "REALCHAT_GATEWAY_MAX_IN_FLIGHT", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Longest a client may take to send its request headers, in seconds.
    #[arg(long, env = "REALCHAT_GATEWAY_HEADER_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=120))]
    pub header_timeout_secs: u64,

    /// Clock skew allowed when checking token expiry, in seconds.
    #[arg(long, env = "REALCHAT_GATEWAY_TOKEN_LEEWAY_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=30))]
    pub token_leeway_secs: u64,

    /// PEM certificate chain; with `--tls-key`, the public port serves HTTPS.
    #[arg(long, env = "REALCHAT_GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "REALCHAT_GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl Options {
    /// Defaults with the given upstreams, on free ports; for tests and embedding.
    pub fn new(
        auth_endpoint: impl Into<String>,
        messaging_endpoint: impl Into<String>,
        redis_url: impl Into<String>,
    ) -> Self {
        Self {
            addr: ([127, 0, 0, 1], 0).into(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            auth_endpoint: auth_endpoint.into(),
            messaging_endpoint: messaging_endpoint.into(),
            redis: RedisOptions::new(redis_url),
            ..realchat_runtime::config::defaults()
        }
    }
}

/// The rate limits in force.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) auth_ip: Limit,
    pub(crate) user: Limit,
    pub(crate) membership: Limit,
}

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) auth: AuthClient,
    pub(crate) messaging: MessagingClient,
    pub(crate) profile: ProfileClient,
    pub(crate) delivery: Arc<upstream::Delivery>,
    pub(crate) verifier: Arc<Verifier>,
    pub(crate) limiter: RateLimiter,
    pub(crate) limits: Limits,
    pub(crate) trusted_proxy_hops: u8,
    pub(crate) request_timeout: Duration,
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
    pub(crate) readiness: Readiness,
    /// The public `/readyz`'s last answer (the admin port's is never cached).
    pub(crate) public_ready: Arc<routes::meta::LastAnswer>,
    pub(crate) proxies: ws_proxy::Proxies,
}

/// A built gateway: listeners bound, upstream clients created (they connect lazily, so the
/// gateway starts, and answers 503, while a backend is down).
pub struct Service {
    public: TcpListener,
    admin: TcpListener,
    state: AppState,
    serve_options: ServeOptions,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Binds the listeners (port 0 picks a free one) and prepares the clients.
    pub async fn build(options: Options) -> anyhow::Result<Self> {
        metrics::describe();
        // The gateway serves no gRPC: it calls, and accepts no callers.
        let internal = options.internal_tls.load("gateway", &[])?;
        let auth = clients::auth("REALCHAT_AUTH_ENDPOINT", &options.auth_endpoint, &internal)?;
        let messaging_channel = clients::channel(
            "REALCHAT_MESSAGING_ENDPOINT",
            &options.messaging_endpoint,
            &internal,
            "messaging",
        )?;
        let messaging = clients::messaging(messaging_channel.clone());
        let profile = clients::profile(
            "REALCHAT_PROFILE_ENDPOINT",
            &options.profile_endpoint,
            &internal,
        )?;
        let verifier = Arc::new(Verifier::new(
            Arc::new(clients::AuthKeySource::new(auth.clone())),
            Duration::from_secs(options.token_leeway_secs),
        ));
        let limiter = if options.rate_limits {
            RateLimiter::new(options.redis.client()?, &options.redis_prefix)?
        } else {
            RateLimiter::disabled()
        };
        let tls = match (&options.tls_cert, &options.tls_key) {
            (Some(cert), Some(key)) => Some(
                realchat_runtime::tls::load_tls(cert, key)
                    .context("REALCHAT_GATEWAY_TLS_CERT/KEY")?,
            ),
            _ => None,
        };
        // Ready while auth answers (its keys are what verifies tokens) and messaging can work.
        let ready_auth = auth.clone();
        let readiness = admin::readiness(move || {
            let (mut auth, messaging) = (ready_auth.clone(), messaging_channel.clone());
            async move {
                let wait = Duration::from_secs(1);
                tokio::time::timeout(wait, auth.get_jwks(GetJwksRequest {}))
                    .await
                    .map_err(|_| "auth: timed out".to_owned())?
                    .map_err(|status| format!("auth: {}", status.message()))?;
                clients::serving("messaging", messaging, wait).await
            }
        });
        let delivery = upstream::Delivery::new(&options.delivery_endpoints)
            .map_err(|e| anyhow::anyhow!("REALCHAT_DELIVERY_ENDPOINTS: {e}"))?;
        let state = AppState {
            auth,
            messaging,
            profile,
            delivery,
            verifier,
            limiter,
            limits: Limits {
                auth_ip: Limit {
                    rate_per_sec: options.auth_ip_rate,
                    burst: options.auth_ip_burst,
                },
                user: Limit {
                    rate_per_sec: options.user_rate,
                    burst: options.user_burst,
                },
                membership: Limit {
                    rate_per_sec: options.membership_rate,
                    burst: options.membership_burst,
                },
            },
            trusted_proxy_hops: options.trusted_proxy_hops,
            request_timeout: Duration::from_secs(options.request_timeout_secs),
            in_flight: Arc::new(tokio::sync::Semaphore::new(options.max_in_flight as usize)),
            readiness,
            public_ready: Arc::default(),
            proxies: ws_proxy::Proxies::default(),
        };
        let public = realchat_runtime::net::bind("REALCHAT_GATEWAY_ADDR", options.addr).await?;
        let admin =
            realchat_runtime::net::bind("REALCHAT_GATEWAY_ADMIN_ADDR", options.admin_addr).await?;
        let serve_options = ServeOptions {
            header_read_timeout: Duration::from_secs(options.header_timeout_secs),
            tls,
            ..ServeOptions::default()
        };
        Ok(Self {
            public,
            admin,
            state,
            serve_options,
        })
    }

    /// Where the public API listens.
    pub fn local_addr(&self) -> SocketAddr {
        realchat_runtime::net::local_addr(&self.public)
    }

    /// Where the admin server listens.
    pub fn admin_addr(&self) -> SocketAddr {
        realchat_runtime::net::local_addr(&self.admin)
    }

    /// Serves until `shutdown` starts, then finishes in-flight requests within the grace period.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let token = shutdown.token();
        tracing::info!(addr = %self.local_addr(), admin = %self.admin_addr(), "gateway started");
        let Self {
            public,
            admin,
            state,
            mut serve_options,
        } = self;
        serve_options.drain_timeout = shutdown.grace();
        let readiness = state.readiness.clone();
        let proxies = state.proxies.clone();
        let handshakes = state.delivery.handshakes.clone();
        // Tokens of revoked sessions are refused from the next poll on.
        let verifier = Arc::clone(&state.verifier);
        let revocations_token = token.clone();
        shutdown.spawn("revocations", async move {
            verifier.follow_revocations(revocations_token).await;
            Ok(())
        });
        let app = router(state);
        shutdown.spawn(
            "public-server",
            realchat_runtime::http::serve(public, app, serve_options, token.clone()),
        );
        // Upgraded connections are no longer the HTTP server's: the proxied WebSockets are
        // closed (1001) and waited for here.
        let proxies_token = token.clone();
        shutdown.spawn("websocket-proxies", async move {
            proxies_token.cancelled().await;
            proxies.close().await;
            handshakes.drained().await;
            Ok(())
        });
        shutdown.spawn("admin-server", admin::serve(admin, readiness, token));
        shutdown.wait().await.map_err(Into::into)
    }
}

fn router(state: AppState) -> Router {
    let by_ip = Router::new()
        .route("/v1/auth/register", post(routes::auth::register))
        .route("/v1/auth/login", post(routes::auth::login))
        .route("/v1/auth/refresh", post(routes::auth::refresh))
        .route("/v1/auth/logout", post(routes::auth::logout))
        .route_layer(from_fn_with_state(state.clone(), middleware::limit_by_ip));
    let authenticated = Router::new()
        .route("/v1/auth/me", get(routes::auth::me))
        .route(
            "/v1/conversations",
            post(routes::conversations::create).get(routes::conversations::list),
        )
        .route("/v1/conversations/{id}", get(routes::conversations::get))
        .route(
            "/v1/conversations/{id}/members",
            get(routes::conversations::members).post(routes::conversations::add_member),
        )
        .route(
            "/v1/conversations/{id}/members/{user_id}",
            delete(routes::conversations::remove_member),
        )
        .route(
            "/v1/conversations/{id}/messages",
            post(routes::conversations::send).get(routes::conversations::history),
        )
        .route(
            "/v1/conversations/{id}/read",
            post(routes::conversations::mark_read),
        )
        .route("/v1/presence", get(routes::realtime::presence))
        .route("/v1/users", get(routes::users::search))
        .route(
            "/v1/users/me",
            get(routes::users::me).patch(routes::users::edit),
        )
        .route("/v1/users/{id}", get(routes::users::get))
        .route_layer(from_fn_with_state(state.clone(), middleware::authenticate));
    Router::new()
        .merge(by_ip)
        .merge(authenticated)
        .route("/v1/ws", get(routes::realtime::websocket))
        .route("/.well-known/jwks.json", get(routes::meta::jwks))
        .route("/v1/openapi.json", get(routes::meta::openapi))
        .route("/healthz", get(routes::meta::healthz))
        .route("/readyz", get(routes::meta::readyz))
        .fallback(routes::meta::not_found)
        .method_not_allowed_fallback(routes::meta::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(from_fn_with_state(state.clone(), middleware::timeout))
        .layer(from_fn_with_state(state.clone(), middleware::shed))
        .layer(from_fn(middleware::record))
        .layer(from_fn(middleware::trace))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            tracing::error!("a handler panicked");
            error::ApiError::internal().into_response()
        }))
        .with_state(state)
}

impl realchat_runtime::service::Service for Service {
    type Options = Options;
    const NAME: &'static str = "gateway";
    const ABOUT: &'static str =
        "RealChat gateway: the public HTTP API, token checks and rate limits.";

    fn admin_addr_of(options: &Options) -> SocketAddr {
        options.admin_addr
    }

    async fn serve(options: Options, shutdown: Shutdown) -> anyhow::Result<()> {
        Service::build(options).await?.run(shutdown).await
    }
}
