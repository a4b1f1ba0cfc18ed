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

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use realchat_events::{
    KafkaOptions, Topic,
    consumer::{self, ConsumerOptions},
};
use realchat_proto::profile::v1::profiles_server::ProfilesServer;
use realchat_runtime::{Shutdown, admin, config::Secret};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use grpc::ProfilesApi;

/// The `profile` database's own migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the `profile` database is migrated with (it has no outbox).
pub fn migrators() -> [&'static sqlx::migrate::Migrator; 1] {
    [&MIGRATOR]
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

    /// PostgreSQL URL of the `profile` database.
    #[arg(
        long,
        env = "REALCHAT_PROFILE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/profile",
        hide_env_values = true
    )]
    pub database_url: Secret<String>,

    /// File holding the PostgreSQL URL (wins over REALCHAT_PROFILE_DATABASE_URL), as container
    /// platforms mount secrets.
    #[arg(long, env = "REALCHAT_PROFILE_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// Largest number of database connections.
    #[arg(
        long,
        env = "REALCHAT_PROFILE_DATABASE_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub database_max_connections: u32,

    /// Apply pending migrations at startup.
    #[arg(long, env = "REALCHAT_PROFILE_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,

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
}

impl Options {
    /// Defaults with the given database and broker, on free ports; for tests and embedding.
    pub fn new(database_url: impl Into<String>, kafka: KafkaOptions) -> Self {
        Self {
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            admin_addr: ([127, 0, 0, 1], 0).into(),
            database_url: Secret::new(database_url.into()),
            database_url_file: None,
            database_max_connections: 16,
            migrate: true,
            auth_endpoint: "http://127.0.0.1:7051".into(),
            consumer_group: "profile".into(),
            kafka,
        }
    }

    /// The database these options name.
    pub fn database(&self) -> realchat_runtime::db::Database<'_> {
        realchat_runtime::db::Database {
            variable: "REALCHAT_PROFILE_DATABASE_URL",
            url: &self.database_url,
            url_file: self.database_url_file.as_deref(),
            max_connections: self.database_max_connections,
            migrate: self.migrate,
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
    options: Options,
}

impl Service {
    /// Binds the listeners (port 0 picks a free one) and prepares the database.
    pub async fn build(mut options: Options) -> anyhow::Result<Self> {
        metrics::describe();
        options.kafka = options.kafka.prepare().await?;
        let pool = options.database().open(&migrators()).await?;
        // Checked here so a malformed endpoint stops the process before it binds anything.
        realchat_runtime::clients::auth("REALCHAT_AUTH_ENDPOINT", &options.auth_endpoint)?;
        let grpc =
            realchat_runtime::net::bind("REALCHAT_PROFILE_GRPC_ADDR", options.grpc_addr).await?;
        let admin =
            realchat_runtime::net::bind("REALCHAT_PROFILE_ADMIN_ADDR", options.admin_addr).await?;
        Ok(Self {
            grpc,
            admin,
            pool,
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
        let Self {
            grpc,
            admin,
            pool,
            options,
        } = self;

        let api = ProfilesApi {
            pool: pool.clone(),
            auth: realchat_runtime::clients::auth(
                "REALCHAT_AUTH_ENDPOINT",
                &options.auth_endpoint,
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

impl realchat_runtime::service::DatabaseService for Service {
    type Options = Options;
    const NAME: &'static str = "profile";
    const ABOUT: &'static str = "RealChat profile service: profiles and the username directory.";

    fn admin_addr_of(options: &Options) -> std::net::SocketAddr {
        options.admin_addr
    }

    fn database(options: &Options) -> realchat_runtime::db::Database<'_> {
        options.database()
    }

    fn migrators() -> Vec<&'static sqlx::migrate::Migrator> {
        migrators().to_vec()
    }

    async fn build(options: Options) -> anyhow::Result<Self> {
        Service::build(options).await
    }

    fn grpc_addr(&self) -> std::net::SocketAddr {
        Service::grpc_addr(self)
    }

    fn admin_addr(&self) -> std::net::SocketAddr {
        Service::admin_addr(self)
    }

    async fn run(self, shutdown: realchat_runtime::Shutdown) -> anyhow::Result<()> {
        Service::run(self, shutdown).await
    }
}
