//! API.md § Presence and § WebSocket: both are served by delivery replicas; the gateway checks
//! the token and passes the request through.
//!
//! A WebSocket is proxied at the byte level: the gateway forwards the upgrade request to a
//! delivery replica ([`crate::upstream`]), hands its `101` back to the client, and then copies
//! bytes both ways until either side closes ([`crate::ws_proxy`]).

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use realchat_runtime::bearer::Token;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{ClientIp, TrustedProxies},
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
    let mut answer = match state.delivery.upgrade(upstream).await {
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
    state.proxies.spawn(client_upgrade, upstream_upgrade);
    response
        .body(Body::empty())
        .unwrap_or_else(|_| ApiError::internal().into_response())
}

async fn client_ip(state: &AppState, request: &mut Request) -> Option<String> {
    let (mut parts, body) = std::mem::take(request).into_parts();
    parts
        .extensions
        .insert(TrustedProxies(state.trusted_proxy_hops));
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
    #[param(pattern = "^[0-9a-fA-F-]{36}(,[0-9a-fA-F-]{36}){0,99}$")]
    user_ids: String,
}

/// Online or offline, and when last seen, for users who share a conversation with the caller;
/// anyone else reads as a user never seen (`offline`, no `last_seen`).
#[utoipa::path(get, path = "/v1/presence", tag = "realtime", params(PresenceQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = PresenceList),
        (status = 400, body = ErrorBody, description = "`invalid_argument`: not 1 to 100 user ids"),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "presence (Redis) is unavailable"),
    ))]
pub(crate) async fn presence(State(state): State<AppState>, request: Request) -> Response {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/v1/presence", |p| p.as_str());
    let mut headers = axum::http::HeaderMap::new();
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, value.clone());
    }
    match state.delivery.request(path_and_query, &headers).await {
        Ok(answer) => relay(answer).await,
        Err(error) => error.into_response(),
    }
}
