//! Test helpers shared by the integration tests. A dev-dependency only.
//!
//! Tests run against real PostgreSQL, Redis and (later) Kafka, and isolate themselves by name,
//! not by new servers: a fresh database per test, a random Redis key prefix per test. Where a test
//! needs to break a dependency it gets a private one ([`RedisServer`]) so it can stop it without
//! disturbing its neighbours.
//!
//! Where the servers are comes from the environment that `cargo xtask test` sets, with defaults
//! that match a developer machine:
//!
//! | variable | default |
//! |---|---|
//! | `REALCHAT_TEST_POSTGRES_URL` | `postgres://postgres@127.0.0.1:5432/postgres` |
//! | `REALCHAT_TEST_REDIS_URL` | `redis://127.0.0.1:6379` |
//! | `REALCHAT_TEST_KAFKA_BROKERS` | `127.0.0.1:9092` |

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // test helpers: a failed setup should stop the test loudly

mod app;
mod db;
pub mod kafka;
mod kafka_server;
pub mod otlp;
mod redis_server;
pub mod tls;
pub mod ws;

use std::time::Duration;

pub use app::{DeliveryReplica, Session, TestApp, TestAppBuilder, counter_value};
pub use db::TestDatabase;
pub use kafka_server::KafkaServer;
pub use redis_server::RedisServer;

/// Logs what the in-process services do when `REALCHAT_TEST_LOG` holds a filter
/// (`REALCHAT_TEST_LOG=info,realchat_delivery=debug cargo test ... -- --nocapture`).
pub fn log_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let Ok(filter) = std::env::var("REALCHAT_TEST_LOG") else {
        return;
    };
    ONCE.call_once(|| {
        let options = realchat_runtime::config::CommonOptions {
            log_filter: filter,
            log_format: realchat_runtime::config::LogFormat::Human,
            shutdown_grace_secs: 5,
            otlp_endpoint: None,
        };
        // The guard would flush traces on drop; a test process has none to flush.
        if let Ok(guard) = realchat_runtime::telemetry::init("test", &options) {
            std::mem::forget(guard);
        }
    });
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_url() -> String {
    std::env::var("REALCHAT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The shared Redis tests use with a random key prefix.
pub fn redis_url() -> String {
    std::env::var("REALCHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The Kafka-protocol broker tests use, with a topic prefix per test.
pub fn kafka_brokers() -> String {
    std::env::var("REALCHAT_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A short random string for unique names.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Polls `check` until it returns `Some`, for at most `timeout`. Panics with `what` on timeout.
/// The bounded alternative to sleeping in a test.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on 127.0.0.1 (free at the time of asking).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A self-signed P-256 server certificate for localhost (not a CA: rustls refuses a CA
/// certificate as a server's), made with the `openssl` tool.
pub fn self_signed_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key, config) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("openssl.cnf"),
    );
    std::fs::write(
        &config,
        "[req]\ndistinguished_name=dn\nx509_extensions=v3\nprompt=no\n[dn]\nCN=localhost\n\
         [v3]\nbasicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let output = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .arg("-config")
        .arg(&config)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed to run this test");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}
