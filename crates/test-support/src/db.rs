//! A database per test.

use sqlx::{Connection, PgConnection};

/// A uniquely named database on the test server, dropped (forcefully) when this is dropped.
/// The service under test creates and migrates it itself, as it would in production.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Picks a fresh name for a database of `service`.
    pub fn new(service: &str) -> Self {
        let name = crate::unique(&format!("rc_test_{service}_"));
        let server = crate::postgres_url();
        let url = match server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => format!("{server}/{name}"),
        };
        Self { name, url }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection to it, for tests that look at stored state.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    /// Makes the database refuse connections and ends the ones it has (`false` lets them in
    /// again): for its service, the database is down.
    pub async fn allow_connections(&self, allowed: bool) {
        let mut server = PgConnection::connect(&crate::postgres_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"ALTER DATABASE "{}" WITH ALLOW_CONNECTIONS {allowed}"#,
            self.name
        )))
        .execute(&mut server)
        .await
        .unwrap();
        if !allowed {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&self.name)
            .execute(&mut server)
            .await
            .unwrap();
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside (or after) the test's runtime; a private thread and runtime can block.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let mut conn = PgConnection::connect(&crate::postgres_url()).await?;
                // The name is ours (`unique`), not user input.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}
