//! The admin server every service runs on its own port: `/metrics`, `/healthz`, `/readyz`.
//!
//! `/healthz` answers 200 while the process can serve HTTP at all. `/readyz` answers 200 only
//! while the service's dependencies answer (its [`Readiness`] check) and it is not shutting down,
//! so a load balancer stops sending it work as soon as a drain begins.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{http::ServeOptions, telemetry::metrics_handle};

/// A readiness check: `Ok` when the service's dependencies answer, else what is missing.
pub type Readiness =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Builds a [`Readiness`] from an async closure.
pub fn readiness<F, Fut>(check: F) -> Readiness
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(check()))
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    shutdown: CancellationToken,
}

/// The admin router, for services that want to mount it themselves.
pub fn router(readiness: Readiness, shutdown: CancellationToken) -> Router {
    // Install the recorder now, not at the first scrape: what happens before it would be lost.
    let _ = metrics_handle();
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(AdminState {
            readiness,
            shutdown,
        })
}

/// Serves the admin router on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = router(readiness, shutdown.clone());
    let options = ServeOptions {
        drain_timeout: Duration::from_secs(1),
        ..ServeOptions::default()
    };
    crate::http::serve(listener, app, options, shutdown).await
}

async fn metrics() -> impl IntoResponse {
    crate::collectors::collect();
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}

async fn ready(State(state): State<AdminState>) -> impl IntoResponse {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_owned());
    }
    match tokio::time::timeout(Duration::from_secs(2), (state.readiness)()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready".to_owned()),
        Ok(Err(missing)) => (StatusCode::SERVICE_UNAVAILABLE, missing),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "readiness check timed out".to_owned(),
        ),
    }
}

/// `<binary> healthcheck`: asks the admin server at `addr` for `/readyz` and succeeds only on a
/// `200`, for container health checks in images that have no shell or curl. An unspecified
/// address (`0.0.0.0`, `::`) is asked on loopback.
pub fn healthcheck(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};

    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let timeout = Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| anyhow::anyhow!("cannot reach the admin server at {target}: {e}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /readyz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.take(4096).read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        let reason = answer.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
        anyhow::bail!("not ready ({status}): {reason}")
    }
}
