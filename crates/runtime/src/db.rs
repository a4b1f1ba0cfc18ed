//! PostgreSQL helpers shared by the services that own a database.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use sqlx::{
    Connection as _, PgConnection, PgPool,
    migrate::{MigrateDatabase as _, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};

use crate::config::{Secret, secret_or_file};

/// A service's database as its options give it: the variable that names it (for errors), the URL
/// or a file holding it, the pool size, and whether to migrate at startup. Each service declares
/// the options under its own names (`REALCHAT_<SERVICE>_DATABASE_URL`, ...); what is done with
/// them is here, once.
#[derive(Debug, Clone, Copy)]
pub struct Database<'a> {
    /// `REALCHAT_<SERVICE>_DATABASE_URL`; `<variable>_FILE` names the file.
    pub variable: &'static str,
    /// The URL given in the variable (or its default).
    pub url: &'a Secret<String>,
    /// The file holding the URL, which wins when set.
    pub url_file: Option<&'a Path>,
    /// Largest number of connections in the pool.
    pub max_connections: u32,
    /// Apply pending migrations at startup.
    pub migrate: bool,
}

impl Database<'_> {
    /// The URL in force: the file's when one is given.
    pub fn url(&self) -> anyhow::Result<Secret<String>> {
        Ok(
            secret_or_file(self.variable, Some(self.url), self.url_file)?
                .unwrap_or_else(|| self.url.clone()),
        )
    }

    /// What a service does with its database before it serves: refuse TLS that cannot be set up
    /// ([`check_tls`]), apply `migrators` when asked, and make the pool (which connects lazily,
    /// so a database that is down does not stop the service from starting).
    pub async fn open(&self, migrators: &[&Migrator]) -> anyhow::Result<PgPool> {
        let url = self.url()?;
        check_tls(url.expose()).await.context(self.variable)?;
        if self.migrate {
            self.migrate_with(&url, migrators).await?;
        }
        let pool = pool(url.expose(), self.max_connections, Duration::from_secs(3))
            .context(self.variable)?;
        let database = url
            .expose()
            .parse::<PgConnectOptions>()
            .ok()
            .and_then(|o| o.get_database().map(str::to_owned))
            .unwrap_or_default();
        observe(&pool, database);
        Ok(pool)
    }

    /// Creates the database if missing and applies `migrators` (`<binary> migrate`).
    pub async fn migrate(&self, migrators: &[&Migrator]) -> anyhow::Result<()> {
        self.migrate_with(&self.url()?, migrators).await
    }

    async fn migrate_with(
        &self,
        url: &Secret<String>,
        migrators: &[&Migrator],
    ) -> anyhow::Result<()> {
        migrate(url.expose(), migrators)
            .await
            .with_context(|| format!("migrating the database of {}", self.variable))
    }
}

/// Declares `DatabaseOptions`, the settings of a service's own database under the service's own
/// variable names, for `#[command(flatten)]` into its options:
///
/// ```ignore
/// realchat_runtime::database_options! {
///     database: "profile",
///     url: "REALCHAT_PROFILE_DATABASE_URL",
///     url_file: "REALCHAT_PROFILE_DATABASE_URL_FILE",
///     max_connections: "REALCHAT_PROFILE_DATABASE_MAX_CONNECTIONS" = 16,
///     migrate: "REALCHAT_PROFILE_MIGRATE",
/// }
/// ```
///
/// The names are spelled out (not built from a prefix) so that a search for a variable finds
/// where it is declared. The default URL is the named database on the local PostgreSQL.
#[macro_export]
macro_rules! database_options {
    (
        database: $database:literal,
        url: $url:literal,
        url_file: $url_file:literal,
        max_connections: $max_connections:literal = $default_max_connections:literal,
        migrate: $migrate:literal $(,)?
    ) => {
        /// Where this service's database is and how it is used.
        #[derive(Debug, Clone, clap::Args)]
        pub struct DatabaseOptions {
            #[arg(
                        long = "database-url",
                        env = $url,
                        help = concat!("PostgreSQL URL of the `", $database, "` database."),
                        default_value = concat!("postgres://postgres@127.0.0.1:5432/", $database),
                        hide_env_values = true
                    )]
            pub url: $crate::config::Secret<String>,

            #[arg(
                        long = "database-url-file",
                        env = $url_file,
                        help = concat!(
                            "File holding the PostgreSQL URL (wins over ", $url,
                            "), as container platforms mount secrets."
                        )
                    )]
            pub url_file: Option<std::path::PathBuf>,

            /// Largest number of database connections.
            #[arg(
                        long = "database-max-connections",
                        env = $max_connections,
                        default_value_t = $default_max_connections
                    )]
            pub max_connections: u32,

            /// Apply pending migrations at startup.
            #[arg(
                        long = "migrate",
                        env = $migrate,
                        default_value_t = true,
                        action = clap::ArgAction::Set
                    )]
            pub migrate: bool,
        }

        impl DatabaseOptions {
            /// The defaults, with the given URL.
            pub fn new(url: impl Into<String>) -> Self {
                Self {
                    url: $crate::config::Secret::new(url.into()),
                    url_file: None,
                    max_connections: $default_max_connections,
                    migrate: true,
                }
            }

            /// The database these options name.
            pub fn as_database(&self) -> $crate::db::Database<'_> {
                $crate::db::Database {
                    variable: $url,
                    url: &self.url,
                    url_file: self.url_file.as_deref(),
                    max_connections: self.max_connections,
                    migrate: self.migrate,
                }
            }
        }
    };
}

/// Connections of a service's pool, by `state` (`in_use`, `idle`), read at each scrape.
pub const POOL_CONNECTIONS: &str = "db_pool_connections";
/// The most connections the pool opens; `in_use` at this means requests wait for one.
pub const POOL_MAX_CONNECTIONS: &str = "db_pool_max_connections";

/// Reports `pool`'s connections at each scrape, labelled with its `database`.
fn observe(pool: &PgPool, database: String) {
    metrics::describe_gauge!(
        POOL_CONNECTIONS,
        "Connections of the database pool, by state (in_use, idle)"
    );
    metrics::describe_gauge!(
        POOL_MAX_CONNECTIONS,
        "The most connections the database pool opens"
    );
    let pool = pool.clone();
    crate::collectors::register(move || {
        let (size, idle) = (pool.size(), pool.num_idle());
        let in_use = size.saturating_sub(u32::try_from(idle).unwrap_or(u32::MAX));
        metrics::gauge!(POOL_CONNECTIONS, "database" => database.clone(), "state" => "in_use")
            .set(f64::from(in_use));
        metrics::gauge!(POOL_CONNECTIONS, "database" => database.clone(), "state" => "idle")
            .set(f64::from(u32::try_from(idle).unwrap_or(u32::MAX)));
        metrics::gauge!(POOL_MAX_CONNECTIONS, "database" => database.clone())
            .set(f64::from(pool.options().get_max_connections()));
    });
}

/// A pool that connects lazily and gives up on a connection after `acquire_timeout`, so a request
/// that needs a database which is down fails fast (and maps to 503) instead of hanging.
pub fn pool(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// Fails when TLS to the server cannot be set up as the URL asks (`sslmode=verify-full` with a
/// CA that did not sign the server's certificate, a host name the certificate does not name,
/// `sslmode=require` against a server without TLS): configuration that no retry fixes, so it
/// should stop the process at startup with a clear error. A server that is down or refuses for
/// another reason is left to the pool, which connects once it is back.
///
/// The URL's `sslmode` and `sslrootcert` work as in libpq; without them, TLS is used when the
/// server offers it, unverified (`prefer`).
pub async fn check_tls(url: &str) -> anyhow::Result<()> {
    // Not `url` in the context: it may hold a password.
    let options: PgConnectOptions = url.parse().context("the PostgreSQL URL does not parse")?;
    let mode = options.get_ssl_mode();
    if matches!(mode, PgSslMode::Disable | PgSslMode::Allow) {
        return Ok(());
    }
    let attempt =
        tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&options)).await;
    match attempt {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(error)) => match tls_failure(&error) {
            Some(reason) => anyhow::bail!(
                "TLS to PostgreSQL at {}:{} failed (sslmode={}): {reason}",
                options.get_host(),
                options.get_port(),
                ssl_mode_name(mode)
            ),
            None => {
                tracing::warn!(
                    error = %error,
                    "PostgreSQL is not reachable yet; connecting when it is"
                );
                Ok(())
            }
        },
        Err(_) => {
            tracing::warn!("PostgreSQL did not answer within 5 s; connecting when it does");
            Ok(())
        }
    }
}

/// Why `error` is a failure to set up TLS, if it is one: sqlx reports some as `Tls`, and a
/// certificate the handshake refused as an I/O error carrying rustls's.
fn tls_failure(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Tls(error) => Some(error.to_string()),
        sqlx::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(ToString::to_string),
        _ => None,
    }
}

fn ssl_mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// Creates the database named in `url` if it does not exist yet.
pub async fn ensure_database(url: &str) -> Result<(), sqlx::Error> {
    if !sqlx::Postgres::database_exists(url).await? {
        match sqlx::Postgres::create_database(url).await {
            Ok(()) => tracing::info!("created the database"),
            // Another replica won the race; that is fine.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates the database if needed and applies `migrators` in order: a service's own first, then
/// those of the shared parts it uses (the outbox's), each keeping its history in its own table.
/// Safe to run from several replicas at once: sqlx takes an advisory lock around each.
pub async fn migrate(url: &str, migrators: &[&Migrator]) -> Result<(), sqlx::Error> {
    ensure_database(url).await?;
    let pool = pool(url, 2, Duration::from_secs(10))?;
    let mut applied = Ok(());
    for migrator in migrators {
        applied = migrator.run(&pool).await.map_err(sqlx::Error::from);
        if applied.is_err() {
            break;
        }
    }
    pool.close().await;
    applied
}

/// Whether `error` means the database is unreachable or refusing work for now (worth a 503 and a
/// retry), rather than a bug: connection failures, and PostgreSQL's connection-exception (08),
/// insufficient-resources (53) and operator-intervention (57, e.g. shutting down) classes.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            ["08", "53", "57"]
                .iter()
                .any(|class| code.starts_with(class))
        }),
        _ => false,
    }
}

/// A readiness check that passes while the database answers `SELECT 1`.
pub fn readiness(pool: PgPool) -> crate::admin::Readiness {
    crate::admin::readiness(move || {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| format!("database: {e}"))
        }
    })
}
