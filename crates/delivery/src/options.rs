//! What a delivery replica is told: addresses, its peers, Redis, limits and timings.

use std::net::SocketAddr;

use realchat_events::KafkaOptions;
use realchat_runtime::redis_client::RedisOptions;

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
        default_value = "http://127.0.0.1:7051"
    )]
    pub auth_endpoint: String,

    /// gRPC endpoint of the messaging service (history, conversations).
    #[arg(
        long,
        env = "REALCHAT_MESSAGING_ENDPOINT",
        default_value = "http://127.0.0.1:7052"
    )]
    pub messaging_endpoint: String,

    /// Mutual TLS on the calls to auth and messaging.
    #[command(flatten)]
    pub internal_tls: realchat_runtime::tls::InternalTlsOptions,

    /// Redis for session routes, presence and forwarding between replicas.
    #[command(flatten)]
    pub redis: RedisOptions,

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

    /// Frames a client may send per second on one socket, sustained. Past it (and the burst)
    /// frames are answered `rate_limited` with a `retry_after_ms`; a client that keeps sending
    /// regardless is closed with 1008.
    #[arg(long, env = "REALCHAT_DELIVERY_FRAMES_PER_SECOND", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub frames_per_second: u32,

    /// Frames a client may send at once on one socket after a quiet while.
    #[arg(long, env = "REALCHAT_DELIVERY_FRAME_BURST", default_value_t = 40,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub frame_burst: u32,

    /// Sockets one user may hold open across the replicas (a few devices, each with a tab or
    /// two). One more is refused before the upgrade with 429 and `Retry-After`.
    #[arg(long, env = "REALCHAT_DELIVERY_MAX_SOCKETS_PER_USER", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_sockets_per_user: u32,

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
            auth_endpoint: auth_endpoint.into(),
            messaging_endpoint: messaging_endpoint.into(),
            redis: RedisOptions::new(redis_url),
            kafka,
            ..realchat_runtime::config::defaults()
        }
    }
}
