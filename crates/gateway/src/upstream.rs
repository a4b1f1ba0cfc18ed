//! The delivery replicas the gateway forwards `/v1/ws` and `/v1/presence` to, tried in turn.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::response::Response;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::ApiError;

/// The delivery replicas, tried in turn.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// `host:port` of each replica.
    replicas: Vec<String>,
    next: AtomicUsize,
}

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
        Ok(Arc::new(Self {
            replicas,
            next: AtomicUsize::new(0),
        }))
    }

    /// A connection to the next replica that answers; each is tried once.
    async fn connect(&self) -> Result<(TcpStream, &str), ApiError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.replicas.len() {
            let replica = &self.replicas[(start + i) % self.replicas.len()];
            match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(replica)).await {
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

    /// Sends `request` to a replica over a fresh HTTP/1.1 connection.
    pub(crate) async fn send(
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
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(replica, %error, "delivery connection ended");
            }
        });
        sender.send_request(request).await.map_err(|error| {
            tracing::warn!(%error, "a delivery replica did not answer");
            ApiError::unavailable("delivery is unavailable, retry shortly")
        })
    }
}
