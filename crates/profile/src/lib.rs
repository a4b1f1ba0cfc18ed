//! The profile service: who people are, and the directory to find them.
//!
//! It owns the `profile` database and serves gRPC `realchat.profile.v1.Profiles`. Profiles are
//! made by consuming `user.registered` from `realchat.users.v1` (idempotently, never undoing an
//! edit), so replaying the topic into an empty database rebuilds them. The directory is a prefix
//! range scan on a bytewise-ordered username index.

#![forbid(unsafe_code)]

pub mod domain;
pub mod error;
mod events;
mod grpc;
pub mod metrics;
pub mod store;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use realchat_events::{
    KafkaOptions, Topic,
    consumer::{self, ConsumerOptions},
};
use realchat_proto::profile::v1::profiles_server::ProfilesServer;
use realchat_runtime::{
    Shutdown, admin,
    tls::{InternalTls, InternalTlsOptions},
};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use grpc::ProfilesApi;

/// The `profile` database's own migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the `profile` database is migrated with (it has no outbox).
pub fn migrators() -> [&'static sqlx::migrate::Migrator; 1] {
    [&MIGRATOR]
}

realchat_runtime::database_options! {
    database: "profile",
    url: "REALCHAT_PROFILE_DATABASE_URL",
    url_file: "REALCHAT_PROFILE_DATABASE_URL_FILE",
    max_connections: "REALCHAT_PROFILE_DATABASE_MAX_CONNECTIONS" = 16,
    migrate: "REALCHAT_PROFILE_MIGRATE",
}

/// Configuration of the profile service. Every field has a default that works with `cargo xtask up`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Address of the gRPC server.
    #[arg(
        long,
        env = "REALCHAT_PROFILE_GRPC_ADDR",
        default_value = "127.0.0.1:7053"
    )]
    pub grpc_addr: SocketAddr,

    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long,
        env = "REALCHAT_PROFILE_ADMIN_ADDR",
        default_value = "127.0.0.1:9183"
    )]
    pub admin_addr: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseOptions,

    /// gRPC endpoint of the auth service, asked about users whose registration event has not
    /// arrived yet.
    #[arg(
        long,
        env = "REALCHAT_AUTH_ENDPOINT",
        default_value = "http://127.0.0.1:7051"
    )]
    pub auth_endpoint: String,

    /// Consumer group reading `realchat.users.v1`.
    #[arg(
        long,
        env = "REALCHAT_PROFILE_CONSUMER_GROUP",
        default_value = "profile"
    )]
    pub consumer_group: String,

    #[command(flatten)]
    pub kafka: KafkaOptions,

    #[command(flatten)]
    pub internal_tls: InternalTlsOptions,
}

/// The services that call profile's gRPC, and the only ones it accepts under mutual TLS.
pub const CALLERS: &[&str] = &["gateway"];

impl Options {
    /// Defaults with the given database and broker, on free ports; for tests and embedding.
    pub fn new(database_url: impl Into<String>, kafka: KafkaOptions) -> Self {
        Self {
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            database: DatabaseOptions::new(database_url),
            kafka,
            ..realchat_runtime::config::defaults()
        }
    }
}

/// Creates the database if missing and applies the migrations.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    realchat_runtime::db::migrate(database_url, &migrators())
        .await
        .context("migrating the profile database")
}

/// A built profile service: listeners bound, database migrated.
#[derive(Debug)]
pub struct Service {
    grpc: TcpListener,
    admin: TcpListener,
    pool: PgPool,
    tls: InternalTls,
    options: Options,
}

impl Service {
    /// Binds the listeners (port 0 picks a free one) and prepares the database.
    pub async fn build(mut options: Options) -> anyhow::Result<Self> {
        metrics::describe();
        options.kafka = options.kafka.prepare().await?;
        let pool = options.database.as_database().open(&migrators()).await?;
        let tls = options.internal_tls.load("profile", CALLERS)?;
        // Checked here so a malformed endpoint stops the process before it binds anything.
        realchat_runtime::clients::auth("REALCHAT_AUTH_ENDPOINT", &options.auth_endpoint, &tls)?;
        let grpc =
            realchat_runtime::net::bind("REALCHAT_PROFILE_GRPC_ADDR", options.grpc_addr).await?;
        let admin =
            realchat_runtime::net::bind("REALCHAT_PROFILE_ADMIN_ADDR", options.admin_addr).await?;
        Ok(Self {
            grpc,
            admin,
            pool,
            tls,
            options,
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

    /// Serves until `shutdown` starts, then drains: the server finishes in-flight calls, the
    /// consumer commits.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let token = shutdown.token();
        tracing::info!(grpc = %self.grpc_addr(), admin = %self.admin_addr(), "profile service started");
        let Self {
            grpc,
            admin,
            pool,
            tls,
            options,
        } = self;

        let api = ProfilesApi {
            pool: pool.clone(),
            auth: realchat_runtime::clients::auth(
                "REALCHAT_AUTH_ENDPOINT",
                &options.auth_endpoint,
                &tls,
            )?,
        };
        // One readiness check behind `/readyz` and the gRPC health service.
        let readiness = realchat_runtime::db::readiness(pool.clone());
        shutdown.spawn(
            "grpc-server",
            realchat_runtime::grpc::serve(
                grpc,
                ProfilesServer::new(api),
                readiness.clone(),
                tls.clone(),
                token.clone(),
            ),
        );
        shutdown.spawn(
            "admin-server",
            admin::serve(admin, readiness, token.clone()),
        );

        let handler = Arc::new(events::Registrations { pool: pool.clone() });
        let consumer_options = ConsumerOptions {
            // Registrations are needed before someone's first conversation, not within
            // milliseconds: poll the broker less.
            fetch_wait: Some(std::time::Duration::from_millis(200)),
            ..ConsumerOptions::new(options.consumer_group.clone(), vec![Topic::Users])
        };
        let kafka = options.kafka.clone();
        let consumer_token = token.clone();
        shutdown.spawn("users-consumer", async move {
            consumer::run(&kafka, consumer_options, handler, consumer_token).await
        });

        let result = shutdown.wait().await;
        pool.close().await;
        result.map_err(Into::into)
    }
}

impl realchat_runtime::service::Service for Service {
    type Options = Options;
    const NAME: &'static str = "profile";
    const ABOUT: &'static str = "RealChat profile service: profiles and the username directory.";

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
}
