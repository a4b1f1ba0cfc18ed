//! The messaging service: conversations, members, messages and read positions.
//!
//! It owns the `messaging` database and serves gRPC `realchat.messaging.v1.Messaging`. A send
//! takes the conversation's next `seq`, stores the message and writes its `message.created` event
//! to the outbox in one transaction, which concurrent sends share ([`sends`], [`store::send_all`]);
//! the answer comes after the commit and means durable. The outbox
//! relay running in every replica publishes events to `realchat.messages.v1` in order, and a
//! consumer of `realchat.users.v1` keeps the table of registered users that members must come from
//! (an id whose event has not arrived yet is confirmed with auth and recorded).

#![forbid(unsafe_code)]

pub mod domain;
pub mod error;
mod events;
mod grpc;
pub mod metrics;
pub mod sends;
pub mod store;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use realchat_events::{
    KafkaOptions, Topic,
    consumer::{self, ConsumerOptions},
};
use realchat_outbox::relay::{Relay, RelayOptions};
use realchat_proto::messaging::v1::messaging_server::MessagingServer;
use realchat_runtime::{
    Shutdown, admin,
    tls::{InternalTls, InternalTlsOptions},
};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use grpc::MessagingApi;
use sends::Sends;

/// The `messaging` database's own migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the `messaging` database is migrated with, in order: its own, then the outbox table's.
pub fn migrators() -> [&'static sqlx::migrate::Migrator; 2] {
    [&MIGRATOR, &*realchat_outbox::MIGRATOR]
}

realchat_runtime::database_options! {
    database: "messaging",
    url: "REALCHAT_MESSAGING_DATABASE_URL",
    url_file: "REALCHAT_MESSAGING_DATABASE_URL_FILE",
    max_connections: "REALCHAT_MESSAGING_DATABASE_MAX_CONNECTIONS" = 32,
    migrate: "REALCHAT_MESSAGING_MIGRATE",
}

/// Configuration of the messaging service. Every field has a default that works with `cargo xtask up`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Address of the gRPC server.
    #[arg(
        long,
        env = "REALCHAT_MESSAGING_GRPC_ADDR",
        default_value = "127.0.0.1:7052"
    )]
    pub grpc_addr: SocketAddr,

    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long,
        env = "REALCHAT_MESSAGING_ADMIN_ADDR",
        default_value = "127.0.0.1:9182"
    )]
    pub admin_addr: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseOptions,

    /// Tasks that commit sends; each commits everything queued when it is free as one transaction
    /// (group commit). More writers mean more transactions in parallel; fewer, larger batches.
    #[arg(long, env = "REALCHAT_MESSAGING_SEND_WRITERS", default_value_t = 4)]
    pub send_writers: usize,

    /// Run the outbox relay in this process (every replica normally does; one publishes at a time).
    #[arg(long, env = "REALCHAT_MESSAGING_RELAY", default_value_t = true, action = clap::ArgAction::Set)]
    pub relay: bool,

    /// gRPC endpoint of the auth service, asked about member ids whose registration event has
    /// not arrived yet.
    #[arg(
        long,
        env = "REALCHAT_AUTH_ENDPOINT",
        default_value = "http://127.0.0.1:7051"
    )]
    pub auth_endpoint: String,

    /// Consumer group reading `realchat.users.v1`.
    #[arg(
        long,
        env = "REALCHAT_MESSAGING_CONSUMER_GROUP",
        default_value = "messaging"
    )]
    pub consumer_group: String,

    #[command(flatten)]
    pub kafka: KafkaOptions,

    #[command(flatten)]
    pub internal_tls: InternalTlsOptions,
}

/// The services that call messaging's gRPC, and the only ones it accepts under mutual TLS.
pub const CALLERS: &[&str] = &["gateway", "delivery"];

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
        .context("migrating the messaging database")
}

/// A built messaging service: listeners bound, database migrated.
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
        let tls = options.internal_tls.load("messaging", CALLERS)?;
        // Checked here so a malformed endpoint stops the process before it binds anything.
        realchat_runtime::clients::auth("REALCHAT_AUTH_ENDPOINT", &options.auth_endpoint, &tls)?;
        let grpc =
            realchat_runtime::net::bind("REALCHAT_MESSAGING_GRPC_ADDR", options.grpc_addr).await?;
        let admin =
            realchat_runtime::net::bind("REALCHAT_MESSAGING_ADMIN_ADDR", options.admin_addr)
                .await?;
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

    /// Serves until `shutdown` starts, then drains: the server finishes in-flight calls, the relay
    /// flushes, the consumer commits.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let token = shutdown.token();
        tracing::info!(grpc = %self.grpc_addr(), admin = %self.admin_addr(), "messaging service started");
        let Self {
            grpc,
            admin,
            pool,
            tls,
            options,
        } = self;

        // The writers end after the gRPC server: it holds the queue until its last call returns.
        // So once the last writer ended, nothing more goes into the outbox, and only then does
        // the relay make its last rounds: sends committed while calls finished are published too.
        let (sends, writers) = Sends::new(pool.clone(), options.send_writers);
        let writes_done = tokio_util::sync::CancellationToken::new();
        let writers_left = Arc::new(std::sync::atomic::AtomicUsize::new(writers.len()));
        for writer in writers {
            // Counted off when the writer ends, even by a panic: the relay must flush anyway.
            let ended = WriterEnded(Arc::clone(&writers_left), writes_done.clone());
            shutdown.spawn("send-writer", async move {
                let _ended = ended;
                writer.await
            });
        }
        let api = MessagingApi {
            pool: pool.clone(),
            sends,
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
                MessagingServer::new(api),
                readiness.clone(),
                tls.clone(),
                token.clone(),
            ),
        );
        shutdown.spawn(
            "admin-server",
            admin::serve(admin, readiness, token.clone()),
        );

        if options.relay {
            let relay = Relay::new(pool.clone(), &options.kafka, RelayOptions::default())?;
            shutdown.spawn("outbox-relay", relay.run(writes_done));
        }

        let handler = Arc::new(events::KnownUsers { pool: pool.clone() });
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

/// Counts a send writer off when dropped; the last one tells the relay that writes are done.
struct WriterEnded(
    Arc<std::sync::atomic::AtomicUsize>,
    tokio_util::sync::CancellationToken,
);

impl Drop for WriterEnded {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.1.cancel();
        }
    }
}

impl realchat_runtime::service::Service for Service {
    type Options = Options;
    const NAME: &'static str = "messaging";
    const ABOUT: &'static str =
        "RealChat messaging service: conversations, messages, read positions, the outbox.";

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
