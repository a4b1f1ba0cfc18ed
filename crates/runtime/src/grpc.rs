//! Serving gRPC, and how a stable API error code travels inside a gRPC status.
//!
//! Every service's gRPC server also answers the standard health service (`grpc.health.v1`) from
//! the same readiness check as its `/readyz`, so a caller (the gateway, delivery) or a probe asks
//! any service whether it can work the same way, knowing nothing of what it does.
//!
//! Services answer errors as `tonic::Status` with the code in the [`ERROR_CODE_METADATA`]
//! metadata entry (`x-realchat-code`); the gateway
//! reads it back to produce the API's error body. The gRPC status code stays meaningful on its
//! own for other clients.

use std::convert::Infallible;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_check_response::ServingStatus,
    health_server::{Health, HealthServer},
};

use crate::{admin::Readiness, telemetry::propagation, tls::InternalTls};

/// Serves one gRPC service on `listener` until `shutdown`, then finishes in-flight calls, with
/// the health service beside it answering from `readiness`. Every call gets a span that
/// continues the caller's trace.
///
/// With mutual TLS ([`InternalTls`]), only connections that complete the handshake (a
/// certificate of one of the server's callers) reach the server; the others are counted in
/// [`SERVER_HANDSHAKE_FAILURES`] and logged.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    readiness: Readiness,
    tls: InternalTls,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
        + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    metrics::describe_counter!(SERVER_REQUESTS, "gRPC calls answered, by method and code");
    metrics::describe_histogram!(
        SERVER_SECONDS,
        metrics::Unit::Seconds,
        "Time from a gRPC call's arrival to its response, by method"
    );
    let health = Readied {
        service: S::NAME,
        readiness,
        shutdown: shutdown.clone(),
    };
    metrics::describe_counter!(
        SERVER_HANDSHAKE_FAILURES,
        "Connections to a gRPC server refused in the TLS handshake (no certificate, another \
         authority's, or not one of the server's callers)"
    );
    let router = tonic::transport::Server::builder()
        .trace_fn(propagation::grpc_server_span)
        .layer(tower::layer::layer_fn(|inner| Red {
            inner,
            service: S::NAME,
        }))
        .add_service(service)
        .add_service(HealthServer::new(health));
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = match tls.server() {
        None => {
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        }
        Some(config) => {
            router
                .serve_with_incoming_shutdown(
                    handshaken(incoming, config),
                    shutdown.cancelled_owned(),
                )
                .await
        }
    };
    served.context("gRPC server")
}

/// Connections refused in the TLS handshake of a gRPC server.
pub const SERVER_HANDSHAKE_FAILURES: &str = "grpc_server_tls_handshake_failures_total";

/// How many handshakes a gRPC server runs at once; past that, accepting waits.
const CONCURRENT_HANDSHAKES: usize = 256;

/// The connections of `incoming` that complete a TLS handshake with `config`, in the order they
/// complete. Handshakes run side by side, each bounded in time, so a peer that stalls holds
/// neither the others nor the accept loop.
fn handshaken(
    incoming: tonic::transport::server::TcpIncoming,
    config: std::sync::Arc<rustls::ServerConfig>,
) -> impl futures::Stream<
    Item = Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    use futures::StreamExt as _;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    incoming
        .filter_map(|accepted| std::future::ready(accepted.ok()))
        .map(move |tcp| {
            let peer = tcp.peer_addr().ok();
            let handshake = acceptor.accept(tcp);
            async move {
                match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(stream)) => Some(stream),
                    Ok(Err(error)) => {
                        metrics::counter!(SERVER_HANDSHAKE_FAILURES).increment(1);
                        tracing::warn!(?peer, %error, "internal TLS handshake refused");
                        None
                    }
                    Err(_) => {
                        metrics::counter!(SERVER_HANDSHAKE_FAILURES).increment(1);
                        tracing::warn!(?peer, "internal TLS handshake timed out");
                        None
                    }
                }
            }
        })
        .buffer_unordered(CONCURRENT_HANDSHAKES)
        .filter_map(|stream| std::future::ready(stream.map(Ok)))
}

/// Calls answered by a gRPC server, by `method` and `code` (the gRPC status name).
pub const SERVER_REQUESTS: &str = "grpc_server_requests_total";
/// Seconds from a call's arrival to its response's head, by `method`.
pub const SERVER_SECONDS: &str = "grpc_server_request_duration_seconds";

/// Counts and times every call (RED): a method of the server's service or of the health
/// service is its own label; any other path, which only a stranger sends, is `other`, so
/// labels stay bounded. A unary call's status is in its response head when it failed
/// (`grpc-status`, trailers-only) and `OK` otherwise.
#[derive(Clone)]
struct Red<S> {
    inner: S,
    service: &'static str,
}

impl<S, B, R> tower::Service<http::Request<B>> for Red<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let ours = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .is_some_and(|(service, _)| {
                service == self.service || service == "grpc.health.v1.Health"
            });
        let method: std::borrow::Cow<'static, str> = if ours {
            path.to_owned().into()
        } else {
            "other".into()
        };
        let started = std::time::Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from_i32);
            metrics::histogram!(SERVER_SECONDS, "method" => method.clone())
                .record(started.elapsed().as_secs_f64());
            metrics::counter!(SERVER_REQUESTS, "method" => method, "code" => format!("{code:?}"))
                .increment(1);
            Ok(response)
        })
    }
}

/// The health service of a server whose one service is `service`: `SERVING` while its readiness
/// check passes and it is not shutting down, `NOT_SERVING` otherwise. The check runs for each
/// call, so the answer is never older than the question.
struct Readied {
    service: &'static str,
    readiness: Readiness,
    shutdown: CancellationToken,
}

#[tonic::async_trait]
impl Health for Readied {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        // The empty name asks about the server as a whole; here it is the same thing.
        let asked = request.into_inner().service;
        if !asked.is_empty() && asked != self.service {
            return Err(tonic::Status::not_found(format!(
                "no service {asked:?} here"
            )));
        }
        let status = if self.shutdown.is_cancelled() {
            ServingStatus::NotServing
        } else {
            match (self.readiness)().await {
                Ok(()) => ServingStatus::Serving,
                Err(why) => {
                    tracing::debug!(%why, "health check: not serving");
                    ServingStatus::NotServing
                }
            }
        };
        Ok(tonic::Response::new(HealthCheckResponse {
            status: status.into(),
        }))
    }

    type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, tonic::Status>>;

    /// Not offered: callers ask when they need to know. The protocol tells clients not to retry
    /// an `UNIMPLEMENTED` watch.
    async fn watch(
        &self,
        _request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "watch is not offered; call Check",
        ))
    }
}

/// Metadata key carrying the API error code.
pub const ERROR_CODE_METADATA: &str = "x-realchat-code";

/// A status with an API error code attached.
pub fn status(
    code: tonic::Code,
    api_code: &'static str,
    message: impl Into<String>,
) -> tonic::Status {
    let mut status = tonic::Status::new(code, message);
    status.metadata_mut().insert(
        ERROR_CODE_METADATA,
        tonic::metadata::MetadataValue::from_static(api_code),
    );
    status
}

/// Metadata key carrying, with a `rate_limited` status, the seconds to wait before retrying.
pub const RETRY_AFTER_METADATA: &str = "x-realchat-retry-after";

/// The caller asks too often: `RESOURCE_EXHAUSTED` with the API code `rate_limited` and the
/// seconds to wait, which the gateway answers as 429 with `Retry-After`.
pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> tonic::Status {
    let mut status = status(tonic::Code::ResourceExhausted, "rate_limited", message);
    status.metadata_mut().insert(
        RETRY_AFTER_METADATA,
        tonic::metadata::MetadataValue::from(retry_after_secs.max(1)),
    );
    status
}

/// The seconds a `rate_limited` status says to wait, if it says.
pub fn retry_after(status: &tonic::Status) -> Option<u64> {
    status
        .metadata()
        .get(RETRY_AFTER_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A dependency (the database) cannot be reached: logged here as a warning, answered as
/// `UNAVAILABLE` so the gateway says 503 and the client retries.
pub fn unavailable(cause: &dyn std::fmt::Display) -> tonic::Status {
    tracing::warn!(error = %cause, "dependency unavailable");
    status(
        tonic::Code::Unavailable,
        "unavailable",
        "temporarily unavailable, retry",
    )
}

/// A bug or an unexpected state: the cause is logged here, once, and never sent.
pub fn internal(cause: &anyhow::Error) -> tonic::Status {
    tracing::error!(error = format!("{cause:#}"), "internal error");
    status(tonic::Code::Internal, "internal", "internal error")
}

/// The API error code a status carries, if a RealChat service set one.
pub fn api_code(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get(ERROR_CODE_METADATA)
        .and_then(|v| v.to_str().ok())
}

/// Whether a call failed in the transport, with no answer from the service: the connection broke,
/// or was refused (a TLS handshake the server or the client turned down included).
pub fn failed_in_transport(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some_and(|e| e.is::<tonic::transport::Error>())
}

/// Whether a call failed because the server was shutting down and refused it: an HTTP/2 GOAWAY
/// for a call the server had not started. Nothing was done, so it can be retried (on another
/// replica, or once the server is back). tonic reports these as `internal`, not `unavailable`.
pub fn refused_by_shutdown(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if format!("{error:?}").contains("GoAway") {
            return true;
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_code_survives_the_round_trip() {
        let s = status(tonic::Code::AlreadyExists, "username_taken", "taken");
        assert_eq!(api_code(&s), Some("username_taken"));
        assert_eq!(s.code(), tonic::Code::AlreadyExists);
        assert_eq!(api_code(&tonic::Status::internal("x")), None);
    }

    /// Another HTTP/2 failure (a reset stream, say): not a refusal.
    #[derive(Debug)]
    struct Reset;

    impl std::fmt::Display for Reset {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("http2 error")
        }
    }

    impl std::error::Error for Reset {}

    /// Debug-prints like hyper's error for a stream a GOAWAY refused.
    #[derive(Debug)]
    #[allow(dead_code)]
    struct Http2(Kind);

    #[derive(Debug)]
    #[allow(dead_code)]
    enum Kind {
        GoAway(&'static str),
    }

    impl std::fmt::Display for Http2 {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("http2 error")
        }
    }

    impl std::error::Error for Http2 {}

    #[test]
    fn only_a_goaway_in_the_source_chain_counts_as_refused() {
        let goaway = tonic::Status::from_error(Box::new(Http2(Kind::GoAway("NO_ERROR"))));
        assert!(refused_by_shutdown(&goaway));
        let other = tonic::Status::from_error(Box::new(Reset));
        assert!(!refused_by_shutdown(&other));
        assert!(!refused_by_shutdown(&tonic::Status::internal(
            "internal error"
        )));
    }
}
