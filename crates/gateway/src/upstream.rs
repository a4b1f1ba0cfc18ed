//! The delivery replicas the gateway forwards `/v1/ws` and `/v1/presence` to, tried in turn.
//!
//! A WebSocket upgrade takes its connection for the socket's life, so each gets a fresh one
//! ([`Delivery::upgrade`]); presence requests reuse kept-alive connections
//! ([`Delivery::request`]), so a client asking often costs no TCP handshake, and no socket in
//! TIME-WAIT, per request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{http::HeaderMap, response::Response};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpStream;

use crate::error::ApiError;

/// The delivery replicas, tried in turn.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// `host:port` of each replica.
    replicas: Vec<String>,
    next: AtomicUsize,
    /// Kept-alive HTTP/1.1 connections for requests that are not upgrades.
    pooled: Client<HttpConnector, Empty<Bytes>>,
    /// The tasks that drive an upgrade's connection until the socket takes it over: bounded,
    /// and waited for at shutdown.
    pub(crate) handshakes: realchat_runtime::shutdown::Background,
}

/// Upgrades being handed over at once, at most; past it an upgrade is answered 503.
const HANDSHAKES: usize = 10_000;

/// Longest wait for a replica to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Idle connections kept per replica for presence requests.
const IDLE_PER_REPLICA: usize = 32;

impl Delivery {
    /// Replicas from endpoint URLs (`ws://host:port`, `http://host:port` or `host:port`).
    pub(crate) fn new(endpoints: &[String]) -> Result<Arc<Self>, String> {
        let mut replicas = Vec::new();
        for endpoint in endpoints.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let authority = endpoint
                .split_once("://")
                .map_or(endpoint, |(_, rest)| rest)
                .trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(format!("{endpoint:?} is not a host:port or a URL of one"));
            }
            replicas.push(authority.to_owned());
        }
        if replicas.is_empty() {
            return Err("no delivery endpoint".into());
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let pooled = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(IDLE_PER_REPLICA)
            .build(connector);
        Ok(Arc::new(Self {
            replicas,
            next: AtomicUsize::new(0),
            pooled,
            handshakes: realchat_runtime::shutdown::Background::new(
                "gateway_handshakes",
                HANDSHAKES,
            ),
        }))
    }

    /// A connection to the next replica that answers; each is tried once.
    async fn connect(&self) -> Result<(TcpStream, &str), ApiError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.replicas.len() {
            let replica = &self.replicas[(start + i) % self.replicas.len()];
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(replica)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok((stream, replica));
                }
                Ok(Err(error)) => tracing::warn!(replica, %error, "delivery replica unreachable"),
                Err(_) => tracing::warn!(replica, "delivery replica did not accept in time"),
            }
        }
        Err(ApiError::unavailable(
            "no delivery replica is reachable, retry shortly",
        ))
    }

    /// `GET path_and_query` with `headers` from a replica, over a kept-alive connection; a replica
    /// that cannot be reached is skipped for the next.
    pub(crate) async fn request(
        &self,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, ApiError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.replicas.len() {
            let replica = &self.replicas[(start + i) % self.replicas.len()];
            let mut request = http::Request::get(format!("http://{replica}{path_and_query}"));
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let request = request
                .body(Empty::<Bytes>::new())
                .map_err(|_| ApiError::invalid_argument("the request cannot be forwarded"))?;
            match self.pooled.request(request).await {
                Ok(answer) => return Ok(answer),
                Err(error) if error.is_connect() => {
                    tracing::warn!(replica, %error, "delivery replica unreachable");
                }
                Err(error) => {
                    tracing::warn!(replica, %error, "a delivery replica did not answer");
                    return Err(ApiError::unavailable(
                        "delivery is unavailable, retry shortly",
                    ));
                }
            }
        }
        Err(ApiError::unavailable(
            "no delivery replica is reachable, retry shortly",
        ))
    }

    /// Sends the upgrade `request` to a replica over a fresh HTTP/1.1 connection, which the
    /// socket then keeps.
    pub(crate) async fn upgrade(
        &self,
        request: http::Request<Empty<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, ApiError> {
        let (stream, replica) = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| {
                tracing::warn!(replica, %error, "handshake with a delivery replica failed");
                ApiError::unavailable("delivery is unavailable, retry shortly")
            })?;
        let replica = replica.to_owned();
        let driving = self.handshakes.spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(replica, %error, "delivery connection ended");
            }
        });
        if !driving {
            return Err(ApiError::unavailable(
                "too many sockets opening at once, retry shortly",
            ));
        }
        sender.send_request(request).await.map_err(|error| {
            tracing::warn!(%error, "a delivery replica did not answer");
            ApiError::unavailable("delivery is unavailable, retry shortly")
        })
    }
}
