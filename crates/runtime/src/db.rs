//! PostgreSQL helpers shared by the services that own a database.

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::{MigrateDatabase as _, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

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

/// Creates the database if needed and applies `migrator`. Safe to run from several replicas at
/// once: sqlx takes an advisory lock around the migrations.
pub async fn migrate(url: &str, migrator: &Migrator) -> Result<(), sqlx::Error> {
    ensure_database(url).await?;
    let pool = pool(url, 2, Duration::from_secs(10))?;
    migrator.run(&pool).await?;
    pool.close().await;
    Ok(())
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
