//! API.md § Presence and § WebSocket: both are served by delivery replicas; the gateway checks
//! the token and passes the request through.
//!
//! A WebSocket is proxied at the byte level: the gateway forwards the upgrade request to a
//! delivery replica, hands its `101` back to the client, and then copies bytes both ways until
//! either side closes. Frames, pings and close codes are delivery's, untouched, with one
//! exception: when the gateway shuts down, it closes each socket itself with `1001` (API.md: the
//! client reconnects and resumes), at a boundary between two of delivery's frames, which it
//! follows for that purpose ([`FrameBoundaries`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use realchat_runtime::bearer::Token;
use serde::Serialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{ClientIp, TrustForwardedFor},
    middleware::verify_and_limit,
};

/// Headers a WebSocket handshake needs upstream, besides the ones the gateway sets itself.
const FORWARDED_HEADERS: [HeaderName; 8] = [
    header::AUTHORIZATION,
    header::ORIGIN,
    header::USER_AGENT,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_EXTENSIONS,
    header::UPGRADE,
];

/// Largest presence answer the gateway relays.
const MAX_UPSTREAM_BODY: usize = 1024 * 1024;

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
    async fn send(
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

/// The WebSocket of API.md: live messages, resume, typing, read receipts and presence.
///
/// Checks the token (401 before any upgrade), then proxies the socket to a delivery replica.
#[utoipa::path(get, path = "/v1/ws", tag = "realtime",
    params(("access_token" = Option<String>, Query,
        description = "For browsers, which cannot set headers on a WebSocket: the access token")),
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching Protocols: JSON text frames as in API.md"),
        (status = 400, body = ErrorBody, description = "`invalid_argument`: not a WebSocket upgrade"),
        (status = 401, body = ErrorBody, description = "`unauthenticated` or `token_expired`, before any upgrade"),
        (status = 403, body = ErrorBody, description = "`forbidden`: an `Origin` that is not allowed"),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "no delivery replica is reachable"),
    ))]
pub(crate) async fn websocket(State(state): State<AppState>, mut request: Request) -> Response {
    let token = match realchat_runtime::bearer::from_headers_or_query(
        request.headers(),
        request.uri().query(),
    ) {
        Token::Present(token) => token.to_owned(),
        Token::Missing => {
            return ApiError::unauthenticated("missing bearer token").into_response();
        }
        Token::Malformed => {
            return ApiError::unauthenticated("authorization must be `Bearer <access_token>`")
                .into_response();
        }
    };
    if let Err(error) = verify_and_limit(&state, &token).await {
        return error.into_response();
    }
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(client_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .filter(|_| is_upgrade && request.method() == Method::GET)
    else {
        return ApiError::invalid_argument(
            "expected a WebSocket upgrade (GET with `Upgrade: websocket`)",
        )
        .into_response();
    };

    let mut upstream = http::Request::builder().method(Method::GET).uri(
        request
            .uri()
            .path_and_query()
            .map_or("/v1/ws", |p| p.as_str()),
    );
    for name in &FORWARDED_HEADERS {
        for value in request.headers().get_all(name) {
            upstream = upstream.header(name, value);
        }
    }
    upstream = upstream.header(header::CONNECTION, "upgrade");
    if let Some(ip) = client_ip(&state, &mut request).await
        && let Ok(value) = HeaderValue::from_str(&ip)
    {
        upstream = upstream.header("x-forwarded-for", value);
    }
    let Ok(upstream) = upstream.body(Empty::<Bytes>::new()) else {
        return ApiError::invalid_argument("the upgrade request cannot be forwarded")
            .into_response();
    };
    let mut answer = match state.delivery.send(upstream).await {
        Ok(answer) => answer,
        Err(error) => return error.into_response(),
    };
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Delivery refused (an origin, say): its answer is the client's.
        return relay(answer).await;
    }
    let upstream_upgrade = hyper::upgrade::on(&mut answer);
    let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    let closing = state.proxies.closing.clone();
    state.proxies.tracker.spawn(async move {
        let (client, upstream) = match tokio::join!(client_upgrade, upstream_upgrade) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            (Err(error), _) | (_, Err(error)) => {
                tracing::debug!(%error, "a WebSocket upgrade did not complete");
                return;
            }
        };
        proxy(TokioIo::new(client), TokioIo::new(upstream), closing).await;
    });
    response
        .body(Body::empty())
        .unwrap_or_else(|_| ApiError::internal().into_response())
}

async fn client_ip(state: &AppState, request: &mut Request) -> Option<String> {
    let (mut parts, body) = std::mem::take(request).into_parts();
    if state.trust_forwarded_for {
        parts.extensions.insert(TrustForwardedFor);
    }
    let ip = <ClientIp as axum::extract::FromRequestParts<()>>::from_request_parts(&mut parts, &())
        .await
        .ok()
        .map(|ClientIp(ip)| ip.to_string());
    *request = Request::from_parts(parts, body);
    ip
}

/// Passes a delivery answer through, body included (bounded).
async fn relay(answer: Response<hyper::body::Incoming>) -> Response {
    let (parts, body) = answer.into_parts();
    match Limited::new(body, MAX_UPSTREAM_BODY).collect().await {
        Ok(collected) => {
            let mut response = Response::new(Body::from(collected.to_bytes()));
            *response.status_mut() = parts.status;
            for name in [
                header::CONTENT_TYPE,
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
            ] {
                if let Some(value) = parts.headers.get(&name) {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(error) => {
            tracing::warn!(%error, "could not read a delivery answer");
            ApiError::unavailable("delivery is unavailable, retry shortly").into_response()
        }
    }
}

/// One user's presence.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documents the answer delivery gives
pub(crate) struct PresenceView {
    #[schema(format = Uuid)]
    user_id: String,
    /// `online` or `offline`.
    status: String,
    /// When the user was last seen online; null if never.
    #[schema(format = DateTime)]
    last_seen: Option<String>,
}

/// The presence of the users asked about.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // documents the answer delivery gives
pub(crate) struct PresenceList {
    presence: Vec<PresenceView>,
}

/// Whose presence.
#[derive(Debug, IntoParams)]
#[allow(dead_code)] // documents the query delivery reads
pub(crate) struct PresenceQuery {
    /// Comma-separated user ids, 1 to 100.
    user_ids: String,
}

/// Online or offline, and when last seen.
#[utoipa::path(get, path = "/v1/presence", tag = "realtime", params(PresenceQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = PresenceList),
        (status = 400, body = ErrorBody, description = "`invalid_argument`: not 1 to 100 user ids"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "presence (Redis) is unavailable"),
    ))]
pub(crate) async fn presence(State(state): State<AppState>, request: Request) -> Response {
    let mut upstream = http::Request::builder().method(Method::GET).uri(
        request
            .uri()
            .path_and_query()
            .map_or("/v1/presence", |p| p.as_str()),
    );
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        upstream = upstream.header(header::AUTHORIZATION, value);
    }
    let Ok(upstream) = upstream.body(Empty::<Bytes>::new()) else {
        return ApiError::invalid_argument("the request cannot be forwarded").into_response();
    };
    match state.delivery.send(upstream).await {
        Ok(answer) => relay(answer).await,
        Err(error) => error.into_response(),
    }
}

/// The WebSockets the gateway proxies, so that shutdown can close them properly.
#[derive(Debug, Clone, Default)]
pub(crate) struct Proxies {
    closing: CancellationToken,
    tracker: TaskTracker,
}

impl Proxies {
    /// Closes every proxied socket with `1001` and waits until they are closed.
    pub(crate) async fn close(&self) {
        self.closing.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// How long a socket may take to be closed properly once the gateway shuts down.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// A close frame from the server: `1001`, "server shutting down".
const GOING_AWAY: [u8; 24] = *b"\x88\x16\x03\xe9server shutting down";

/// Copies bytes both ways until either side closes, or until `closing`: then, at the next
/// boundary between delivery's frames, the client gets a `1001` close and both connections end
/// (delivery sees its client leave).
async fn proxy<C, U>(client: C, upstream: U, closing: CancellationToken)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let to_upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
    };
    let to_client = async {
        let mut frames = FrameBoundaries::default();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                biased;
                () = closing.cancelled(), if frames.at_boundary() => {
                    let _ = client_write.write_all(&GOING_AWAY).await;
                    let _ = client_write.shutdown().await;
                    return;
                }
                read = upstream_read.read(&mut buffer) => {
                    let n = match read {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                    frames.feed(&buffer[..n]);
                }
            }
        }
        let _ = client_write.shutdown().await;
    };
    // A client that stopped reading, or a frame that never ends, must not hold the gateway's
    // shutdown: past this, the connection is dropped (1006) whatever it was doing.
    let give_up = async {
        closing.cancelled().await;
        tokio::time::sleep(CLOSE_WITHIN).await;
    };
    // Either direction ending ends the socket: the other side's close follows from it.
    tokio::select! {
        () = to_upstream => {}
        () = to_client => {}
        () = give_up => {}
    }
}

/// Follows a stream of WebSocket frames (RFC 6455 § 5.2) to know when it is between two of them.
#[derive(Debug, Default)]
struct FrameBoundaries {
    /// The header of the frame being read, while incomplete.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
}

impl FrameBoundaries {
    fn at_boundary(&self) -> bool {
        self.header.is_empty() && self.payload_left == 0
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .map_or(bytes.len(), |left| left.min(bytes.len()));
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if let Some(length) = header_length(&self.header)
                && self.header.len() == length
            {
                self.payload_left = payload_length(&self.header);
                self.header.clear();
            }
        }
    }
}

/// The length of a frame header, once its first two bytes are known.
fn header_length(header: &[u8]) -> Option<usize> {
    let second = *header.get(1)?;
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + extended + mask)
}

/// The payload length a complete frame header gives.
fn payload_length(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => header[2..10]
            .iter()
            .fold(0u64, |length, byte| (length << 8) | u64::from(*byte)),
        length => u64::from(length),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked frame with `payload` bytes of payload.
    fn frame(payload: usize) -> Vec<u8> {
        let mut frame = vec![0x81];
        match payload {
            0..=125 => frame.push(payload as u8),
            126..=65_535 => {
                frame.push(126);
                frame.extend_from_slice(&(payload as u16).to_be_bytes());
            }
            _ => {
                frame.push(127);
                frame.extend_from_slice(&(payload as u64).to_be_bytes());
            }
        }
        frame.extend(std::iter::repeat_n(b'x', payload));
        frame
    }

    #[test]
    fn boundaries_are_found_however_the_stream_is_cut() {
        let stream: Vec<u8> = [frame(0), frame(5), frame(125), frame(300), frame(70_000)].concat();
        let ends: Vec<usize> = [0, 5, 125, 300, 70_000]
            .iter()
            .scan(0, |at, payload| {
                *at += frame(*payload).len();
                Some(*at)
            })
            .collect();
        for cut in [1, 2, 3, 7, 1000, stream.len()] {
            let mut frames = FrameBoundaries::default();
            let mut at = 0;
            for chunk in stream.chunks(cut) {
                frames.feed(chunk);
                at += chunk.len();
                assert_eq!(
                    frames.at_boundary(),
                    ends.contains(&at),
                    "cut {cut}, at {at}"
                );
            }
        }
    }

    #[test]
    fn a_masked_header_counts_its_key() {
        let mut frames = FrameBoundaries::default();
        frames.feed(&[0x81, 0x82, 1, 2, 3, 4]);
        assert!(!frames.at_boundary());
        frames.feed(&[9, 9]);
        assert!(frames.at_boundary());
    }

    #[test]
    fn the_close_frame_says_1001_and_why() {
        assert_eq!(GOING_AWAY[0], 0x88);
        assert_eq!(usize::from(GOING_AWAY[1]), GOING_AWAY.len() - 2);
        assert_eq!(u16::from_be_bytes([GOING_AWAY[2], GOING_AWAY[3]]), 1001);
    }
}
