//! The auth service: users, password hashes, access and refresh tokens, signing keys.
//!
//! It owns the `auth` database and serves gRPC `realchat.auth.v1.Auth`. Access tokens are
//! Ed25519-signed JWTs that every other service verifies with the public keys from `GetJwks`;
//! refresh tokens are opaque, stored hashed, single-use and grouped in families so a replayed
//! token revokes the whole login (see [`store::rotate`]). Every registration is announced as a
//! `user.registered` event on `realchat.users.v1` through the transactional outbox.

#![forbid(unsafe_code)]

pub mod domain;
pub mod error;
mod grpc;
pub mod keys;
pub mod metrics;
pub mod password;
pub mod sealing;
pub mod store;
pub mod tokens;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use realchat_events::KafkaOptions;
use realchat_outbox::relay::{Relay, RelayOptions};
use realchat_proto::auth::v1::auth_server::AuthServer;
use realchat_runtime::{
    Shutdown, admin,
    config::Secret,
    tls::{InternalTls, InternalTlsOptions},
};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use grpc::AuthApi;

/// The `auth` database's own migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the `auth` database is migrated with, in order: its own, then the outbox table's.
pub fn migrators() -> [&'static sqlx::migrate::Migrator; 2] {
    [&MIGRATOR, &*realchat_outbox::MIGRATOR]
}

realchat_runtime::database_options! {
    database: "auth",
    url: "REALCHAT_AUTH_DATABASE_URL",
    url_file: "REALCHAT_AUTH_DATABASE_URL_FILE",
    max_connections: "REALCHAT_AUTH_DATABASE_MAX_CONNECTIONS" = 16,
    migrate: "REALCHAT_AUTH_MIGRATE",
}

/// Configuration of the auth service. Every field has a default that works with `cargo xtask up`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Address of the gRPC server.
    #[arg(
        long,
        env = "REALCHAT_AUTH_GRPC_ADDR",
        default_value = "127.0.0.1:7051"
    )]
    pub grpc_addr: SocketAddr,

    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long,
        env = "REALCHAT_AUTH_ADMIN_ADDR",
        default_value = "127.0.0.1:9181"
    )]
    pub admin_addr: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseOptions,

    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "REALCHAT_AUTH_ACCESS_TOKEN_TTL_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub access_token_ttl_secs: u64,

    /// Lifetime of a refresh token, in days.
    #[arg(long, env = "REALCHAT_AUTH_REFRESH_TOKEN_TTL_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=365))]
    pub refresh_token_ttl_days: u64,

    /// How long one signing key signs before its successor takes over, in days.
    #[arg(long, env = "REALCHAT_AUTH_KEY_ROTATION_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=365))]
    pub key_rotation_days: u64,

    /// Key-encryption key that seals the signing keys in the database: 32 random bytes in base64
    /// (`openssl rand -base64 32`). Without it they are stored unsealed, and a copy of the
    /// database can mint tokens.
    #[arg(long, env = "REALCHAT_AUTH_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    pub key_encryption_key: Option<Secret<String>>,

    /// File holding the key-encryption key (wins over REALCHAT_AUTH_KEY_ENCRYPTION_KEY).
    #[arg(long, env = "REALCHAT_AUTH_KEY_ENCRYPTION_KEY_FILE")]
    pub key_encryption_key_file: Option<PathBuf>,

    /// Earlier key-encryption keys, comma-separated: keys sealed under them still open, and are
    /// sealed again under the current one (a rotation).
    #[arg(
        long,
        env = "REALCHAT_AUTH_OLD_KEY_ENCRYPTION_KEYS",
        hide_env_values = true
    )]
    pub old_key_encryption_keys: Option<Secret<String>>,

    /// File holding the earlier key-encryption keys (wins over REALCHAT_AUTH_OLD_KEY_ENCRYPTION_KEYS).
    #[arg(long, env = "REALCHAT_AUTH_OLD_KEY_ENCRYPTION_KEYS_FILE")]
    pub old_key_encryption_keys_file: Option<PathBuf>,

    /// Delete, at startup, signing keys sealed under a key-encryption key that was not given,
    /// instead of refusing to start: for a local, throwaway topology only (`cargo xtask up` sets
    /// it), where the key-encryption key can be lost with the data directory while the database
    /// stays. Tokens those keys signed stop working.
    #[arg(long, env = "REALCHAT_AUTH_DISCARD_UNOPENABLE_KEYS", default_value_t = false, action = clap::ArgAction::Set)]
    pub discard_unopenable_keys: bool,

    /// Password hashes computed at once (each takes 19 MiB); 0 means one per CPU.
    #[arg(long, env = "REALCHAT_AUTH_HASH_CONCURRENCY", default_value_t = 0)]
    pub hash_concurrency: usize,

    #[command(flatten)]
    pub kafka: KafkaOptions,

    #[command(flatten)]
    pub internal_tls: InternalTlsOptions,
}

/// The services that call auth's gRPC, and the only ones it accepts under mutual TLS: the gateway
/// (accounts, tokens), delivery (keys, revocations), messaging and profile (registered users).
pub const CALLERS: &[&str] = &["gateway", "delivery", "messaging", "profile"];

impl Options {
    /// Defaults, with the given database; for tests and embedding.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            database: DatabaseOptions::new(database_url),
            ..realchat_runtime::config::defaults()
        }
    }
}

impl Options {
    /// The key-encryption keys these options give (files win over variables).
    pub fn key_encryption(&self) -> anyhow::Result<sealing::KeyEncryption> {
        use realchat_runtime::config::secret_or_file;
        let current = secret_or_file(
            "REALCHAT_AUTH_KEY_ENCRYPTION_KEY",
            self.key_encryption_key.as_ref(),
            self.key_encryption_key_file.as_deref(),
        )?;
        let old = secret_or_file(
            "REALCHAT_AUTH_OLD_KEY_ENCRYPTION_KEYS",
            self.old_key_encryption_keys.as_ref(),
            self.old_key_encryption_keys_file.as_deref(),
        )?;
        sealing::KeyEncryption::from_settings(current.as_ref(), old.as_ref())
    }

    fn key_ring(
        &self,
        pool: PgPool,
    ) -> impl std::future::Future<Output = anyhow::Result<keys::KeyRing>> {
        let access_ttl = Duration::from_secs(self.access_token_ttl_secs);
        let rotation = Duration::from_secs(self.key_rotation_days * 86_400);
        let sealing = self.key_encryption();
        let discard = self.discard_unopenable_keys;
        async move {
            keys::KeyRing::load(pool, rotation, access_ttl, sealing?, discard)
                .await
                .context("loading the signing keys")
        }
    }
}

/// Creates the database if missing and applies the migrations.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    realchat_runtime::db::migrate(database_url, &migrators())
        .await
        .context("migrating the auth database")
}

/// A built auth service: listeners bound, database reachable, keys loaded.
#[derive(Debug)]
pub struct Service {
    grpc: TcpListener,
    admin: TcpListener,
    api: AuthApi,
    pool: PgPool,
    tls: InternalTls,
    kafka: KafkaOptions,
}

impl Service {
    /// Binds the listeners (port 0 picks a free one), prepares the database and the keys.
    pub async fn build(mut options: Options) -> anyhow::Result<Self> {
        metrics::describe();
        options.kafka = options.kafka.prepare().await?;
        let tls = options.internal_tls.load("auth", CALLERS)?;
        let pool = options.database.as_database().open(&migrators()).await?;
        let access_ttl = Duration::from_secs(options.access_token_ttl_secs);
        let keys = options.key_ring(pool.clone()).await?;
        let concurrency = match options.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        let api = AuthApi {
            pool: pool.clone(),
            hasher: password::Hasher::new(concurrency)?,
            keys,
            access_ttl,
            refresh_ttl: Duration::from_secs(options.refresh_token_ttl_days * 86_400),
        };
        let grpc =
            realchat_runtime::net::bind("REALCHAT_AUTH_GRPC_ADDR", options.grpc_addr).await?;
        let admin =
            realchat_runtime::net::bind("REALCHAT_AUTH_ADMIN_ADDR", options.admin_addr).await?;
        Ok(Self {
            grpc,
            admin,
            api,
            pool,
            tls,
            kafka: options.kafka,
        })
    }

    /// Where the gRPC server listens.
    pub fn grpc_addr(&self) -> SocketAddr {
        realchat_runtime::net::local_addr(&self.grpc)
    }

    /// Where the admin server listens.
    pub fn admin_addr(&self) -> SocketAddr {
        realchat_runtime::net::local_addr(&self.admin)
    }

    /// The database pool (tests inspect state through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The kids of the signing keys published in the JWKS, newest first.
    pub async fn published_kids(&self) -> Vec<String> {
        self.api
            .keys
            .published()
            .await
            .into_iter()
            .map(|key| key.kid)
            .collect()
    }

    /// Serves until `shutdown` starts, then drains within its grace period.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let token = shutdown.token();
        tracing::info!(grpc = %self.grpc_addr(), admin = %self.admin_addr(), "auth service started");
        let Self {
            grpc,
            admin,
            api,
            pool,
            tls,
            kafka,
        } = self;

        // One readiness check behind `/readyz` and the gRPC health service.
        let readiness = realchat_runtime::db::readiness(pool.clone());
        shutdown.spawn(
            "grpc-server",
            realchat_runtime::grpc::serve(
                grpc,
                AuthServer::new(api.clone()),
                readiness.clone(),
                tls,
                token.clone(),
            ),
        );
        shutdown.spawn(
            "admin-server",
            admin::serve(admin, readiness, token.clone()),
        );

        let relay = Relay::new(pool.clone(), &kafka, RelayOptions::default())?;
        shutdown.spawn("outbox-relay", relay.run(token.clone()));

        let keys = api.keys.clone();
        let maintenance_token = token.clone();
        shutdown.spawn("key-maintenance", async move {
            let mut every = tokio::time::interval(Duration::from_secs(300));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = maintenance_token.cancelled() => return Ok(()),
                    _ = every.tick() => {
                        // A database blip must not take tokens down: the loaded keys keep signing.
                        if let Err(error) = keys.maintain().await {
                            tracing::warn!(%error, "key maintenance failed, will retry");
                        }
                    }
                }
            }
        });

        let result = shutdown.wait().await;
        pool.close().await;
        result.map_err(Into::into)
    }
}

impl realchat_runtime::service::Service for Service {
    type Options = Options;
    const NAME: &'static str = "auth";
    const ABOUT: &'static str = "RealChat auth service: users, passwords, tokens and signing keys.";

    fn admin_addr_of(options: &Options) -> SocketAddr {
        options.admin_addr
    }

    async fn serve(options: Options, shutdown: Shutdown) -> anyhow::Result<()> {
        Service::build(options).await?.run(shutdown).await
    }
}

impl realchat_runtime::service::DatabaseService for Service {
    fn database(options: &Options) -> realchat_runtime::db::Database<'_> {
        options.database.as_database()
    }

    fn migrators() -> Vec<&'static sqlx::migrate::Migrator> {
        migrators().to_vec()
    }

    fn commands() -> Vec<clap::Command> {
        vec![clap::Command::new("seal-keys").about(
            "Seal every signing key under the current key-encryption key (after a rotation), and exit.",
        )]
    }

    async fn command(name: &str, options: Options) -> anyhow::Result<()> {
        anyhow::ensure!(name == "seal-keys", "no command {name:?}");
        anyhow::ensure!(
            options.key_encryption()?.current_id().is_some(),
            "seal-keys needs REALCHAT_AUTH_KEY_ENCRYPTION_KEY (or its _FILE)"
        );
        let pool = options.database.as_database().open(&migrators()).await?;
        // Loading seals what is due; `seal_all` then says how many are sealed in all.
        let ring = options.key_ring(pool.clone()).await?;
        let resealed = ring.seal_all().await?;
        let sealed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM signing_keys WHERE kek_id IS NOT NULL")
                .fetch_one(&pool)
                .await?;
        println!(
            "{sealed} signing keys sealed under the current key-encryption key ({resealed} just now)"
        );
        Ok(())
    }
}
