//! The replica's public HTTP routes: `GET /v1/ws` and `GET /v1/presence`, behind a token check.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{
        Query, State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
    routing::get,
};
use realchat_proto::messaging::v1::SharedWithRequest;
use realchat_runtime::{format::timestamp, jwt::VerifyError};
use serde::Deserialize;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{
    error::ApiError,
    protocol,
    session::{self, Shared},
};

/// Most users one presence query may name.
pub const MAX_PRESENCE_USERS: usize = 100;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) shared: Arc<Shared>,
    pub(crate) allowed_origins: Arc<[String]>,
    pub(crate) sessions: TaskTracker,
    pub(crate) token: CancellationToken,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/ws", get(websocket))
        .route("/v1/presence", get(presence))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

async fn authenticate(
    state: &AppState,
    token: realchat_runtime::bearer::Token<'_>,
) -> Result<realchat_runtime::jwt::Claims, ApiError> {
    use realchat_runtime::bearer::Token;
    let token = match token {
        Token::Present(token) => token,
        Token::Missing => return Err(ApiError::unauthenticated("missing bearer token")),
        Token::Malformed => {
            return Err(ApiError::unauthenticated(
                "authorization must be `Bearer <access_token>`",
            ));
        }
    };
    state
        .shared
        .verifier
        .verify(token)
        .await
        .map_err(|error| match error {
            VerifyError::Expired => ApiError::token_expired(),
            VerifyError::Revoked => {
                ApiError::unauthenticated("the session of this access token has ended")
            }
            VerifyError::Invalid(reason) => {
                tracing::debug!(reason, "refused a token");
                ApiError::unauthenticated("invalid token")
            }
            VerifyError::KeysUnavailable(reason) => {
                tracing::warn!(reason, "cannot check tokens: auth keys unavailable");
                ApiError::unavailable("cannot check tokens right now")
            }
        })
}

async fn websocket(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let token = realchat_runtime::bearer::from_headers_or_query(&headers, uri.query());
    let claims = match authenticate(&state, token).await {
        Ok(claims) => claims,
        Err(error) => return error.into_response(),
    };
    if let Some(origin) = headers.get(header::ORIGIN)
        && !state.allowed_origins.is_empty()
    {
        let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
        if !state.allowed_origins.iter().any(|o| o == origin) {
            return ApiError::forbidden("this origin may not open sockets").into_response();
        }
    }
    if state.token.is_cancelled() {
        return ApiError::unavailable("shutting down").into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::invalid_argument(format!(
                "expected a WebSocket upgrade: {rejection}"
            ))
            .into_response();
        }
    };
    let (opening, here) = state.shared.hub.open(claims.sub);
    if let Err(refusal) = admit(&state.shared, claims.sub, here).await {
        return refusal.into_response();
    }
    let shared = Arc::clone(&state.shared);
    let sessions = state.sessions.clone();
    upgrade
        .max_message_size(protocol::MAX_FRAME_BYTES)
        .max_frame_size(protocol::MAX_FRAME_BYTES)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            sessions.track_future(session::run(socket, claims, shared, opening))
        })
}

/// Seconds a client refused for having too many sockets is told to wait: by then a socket of a
/// dead replica no longer counts.
const TOO_MANY_SOCKETS_RETRY_SECS: u64 = 10;

/// Admits one more socket of `user` (`here` of them on this replica, with it) if the user's
/// sockets across the replicas stay within the cap. Redis counts them; while Redis is
/// unusable, this replica's own count is held to the cap.
async fn admit(shared: &Shared, user: Uuid, here: u32) -> Result<(), ApiError> {
    let cap = shared.options.max_sockets_per_user;
    let within = match shared.cluster.open_socket(&user, here, cap).await {
        Ok(true) => return Ok(()),
        Ok(false) => "cluster",
        Err(_) if here > cap => "replica",
        Err(_) => return Ok(()),
    };
    ::metrics::counter!(crate::metrics::SOCKETS_REFUSED, "where" => within).increment(1);
    tracing::debug!(user.id = %user, cap, "refused a socket: too many open");
    Err(ApiError {
        message: format!("at most {cap} open sockets per user: close one first"),
        ..ApiError::rate_limited(TOO_MANY_SOCKETS_RETRY_SECS)
    })
}

/// Which of `users` share a conversation with `caller`, asked of messaging: only they may see
/// whether the caller's contacts are online.
async fn contacts_among(
    state: &AppState,
    caller: Uuid,
    users: &[Uuid],
) -> Result<Vec<Uuid>, ApiError> {
    let mut messaging = state.shared.messaging.clone();
    let request = SharedWithRequest {
        caller_id: caller.to_string(),
        user_ids: users.iter().map(Uuid::to_string).collect(),
    };
    let answer = tokio::time::timeout(Duration::from_secs(3), messaging.shared_with(request))
        .await
        .map_err(|_| ApiError::unavailable("presence is unavailable right now"))?
        .map_err(|status| {
            tracing::warn!(%status, "messaging could not say who shares a conversation");
            ApiError::unavailable("presence is unavailable right now")
        })?;
    Ok(answer
        .into_inner()
        .user_ids
        .iter()
        .filter_map(|id| id.parse().ok())
        .collect())
}

#[derive(Debug, Deserialize)]
struct PresenceQuery {
    user_ids: Option<String>,
}

async fn presence(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PresenceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, realchat_runtime::bearer::from_headers(&headers))
        .await?
        .sub;
    let Ok(Query(query)) = query else {
        return Err(ApiError::invalid_argument(
            "user_ids must be a comma-separated list of user ids",
        ));
    };
    let raw = query.user_ids.unwrap_or_default();
    let mut users = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let user: Uuid = part
            .parse()
            .map_err(|_| ApiError::invalid_argument(format!("{part:?} is not a user id")))?;
        if !users.contains(&user) {
            users.push(user);
        }
    }
    if users.is_empty() || users.len() > MAX_PRESENCE_USERS {
        return Err(ApiError::invalid_argument(format!(
            "user_ids must name 1 to {MAX_PRESENCE_USERS} users"
        )));
    }
    let contacts = contacts_among(&state, caller, &users).await?;
    let found = state
        .shared
        .cluster
        .presence(&users)
        .await
        .map_err(|_| ApiError::unavailable("presence is unavailable right now"))?;
    let presence: Vec<serde_json::Value> = found
        .into_iter()
        .map(|p| {
            // Someone who shares no conversation with the caller reads as a user never seen.
            let visible = p.user == caller || contacts.contains(&p.user);
            serde_json::json!({
                "user_id": p.user,
                "status": if visible && p.online { "online" } else { "offline" },
                "last_seen": p.last_seen_ms.filter(|_| visible).map(timestamp),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "presence": presence })).into_response())
}
