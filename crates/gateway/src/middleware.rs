//! Request middleware: authentication, rate limits, timeouts, request metrics, the request span.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use realchat_runtime::{bearer::Token, jwt::VerifyError};
use tracing::Instrument as _;

use crate::{
    AppState,
    error::ApiError,
    extract::{AuthUser, ClientIp, TrustedProxies},
    metrics,
    rate_limit::{Decision, Scope},
};

/// Requires a valid bearer token and applies the per-user limit. Puts [`AuthUser`] in the request.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = match bearer_token(&request) {
        Ok(token) => token,
        Err(error) => return error.into_response(),
    };
    let user_id = match verify_and_limit(&state, token).await {
        Ok(user_id) => user_id,
        Err(error) => return error.into_response(),
    };
    request.extensions_mut().insert(AuthUser { user_id });
    next.run(request).await
}

/// Checks an access token and takes one request from its user's bucket; the user's id.
pub(crate) async fn verify_and_limit(
    state: &AppState,
    token: &str,
) -> Result<uuid::Uuid, ApiError> {
    let claims = state.verifier.verify(token).await.map_err(token_error)?;
    if let Decision::Deny { retry_after_secs } = state
        .limiter
        .check(Scope::User, &claims.sub.to_string(), state.limits.user)
        .await
    {
        return Err(ApiError::rate_limited(retry_after_secs));
    }
    Ok(claims.sub)
}

/// Takes one from `user`'s membership bucket (creating a conversation, adding a member).
pub(crate) async fn limit_membership(state: &AppState, user: uuid::Uuid) -> Result<(), ApiError> {
    match state
        .limiter
        .check(
            Scope::Membership,
            &user.to_string(),
            state.limits.membership,
        )
        .await
    {
        Decision::Allow => Ok(()),
        Decision::Deny { retry_after_secs } => Err(ApiError {
            message: "too many conversations created or members added, slow down".to_owned(),
            ..ApiError::rate_limited(retry_after_secs)
        }),
    }
}

fn bearer_token(request: &Request) -> Result<&str, ApiError> {
    match realchat_runtime::bearer::from_headers(request.headers()) {
        Token::Present(token) => Ok(token),
        Token::Missing => {
            ::metrics::counter!(metrics::TOKENS_REFUSED, "reason" => "missing").increment(1);
            Err(ApiError::unauthenticated("missing bearer token"))
        }
        Token::Malformed => {
            ::metrics::counter!(metrics::TOKENS_REFUSED, "reason" => "invalid").increment(1);
            Err(ApiError::unauthenticated(
                "authorization must be `Bearer <access_token>`",
            ))
        }
    }
}

/// Maps a verification failure to the API's 401s (or 503 when auth's keys cannot be fetched).
pub(crate) fn token_error(error: VerifyError) -> ApiError {
    match error {
        VerifyError::Expired => {
            ::metrics::counter!(metrics::TOKENS_REFUSED, "reason" => "expired").increment(1);
            ApiError::token_expired()
        }
        VerifyError::Revoked => {
            ::metrics::counter!(metrics::TOKENS_REFUSED, "reason" => "revoked").increment(1);
            ApiError::unauthenticated("the session of this access token has ended: log in again")
        }
        VerifyError::Invalid(reason) => {
            ::metrics::counter!(metrics::TOKENS_REFUSED, "reason" => "invalid").increment(1);
            tracing::debug!(reason, "refused an access token");
            ApiError::unauthenticated("the access token is not valid")
        }
        VerifyError::KeysUnavailable(reason) => {
            tracing::warn!(reason, "cannot fetch signing keys from auth");
            ApiError::unavailable("cannot verify tokens right now, retry shortly")
        }
    }
}

/// Applies the per-IP limit of the unauthenticated auth endpoints.
pub(crate) async fn limit_by_ip(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    parts
        .extensions
        .insert(TrustedProxies(state.trusted_proxy_hops));
    let ip = match <ClientIp as axum::extract::FromRequestParts<()>>::from_request_parts(
        &mut parts,
        &(),
    )
    .await
    {
        Ok(ClientIp(ip)) => ip,
        Err(error) => return error.into_response(),
    };
    if let Decision::Deny { retry_after_secs } = state
        .limiter
        .check(
            Scope::AuthIp,
            &crate::extract::bucket(ip),
            state.limits.auth_ip,
        )
        .await
    {
        return ApiError::rate_limited(retry_after_secs).into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Refuses a request at once when `max_in_flight` are already in progress: under overload the
/// client is told to come back (503 with `Retry-After`) rather than left waiting in a queue that
/// only grows. A WebSocket holds its permit only until it is upgraded.
pub(crate) async fn shed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = Arc::clone(&state.in_flight).try_acquire_owned() else {
        ::metrics::counter!(metrics::SHED).increment(1);
        return ApiError::unavailable("the gateway is at its limit of requests in progress")
            .into_response();
    };
    next.run(request).await
}

/// Bounds the whole request, body reading included, so a slow client cannot hold a worker.
pub(crate) async fn timeout(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable("the request took too long").into_response(),
    }
}

/// Runs the request in its span, which continues the caller's trace when it sent a
/// `traceparent` and starts one otherwise. The gRPC calls the handler makes carry it on.
pub(crate) async fn trace(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        parent: None,
        "http",
        http.request.method = %request.method(),
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.kind = "server",
    );
    realchat_runtime::telemetry::propagation::adopt(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// Counts and times requests by route template (never by raw path: ids would explode the labels).
pub(crate) async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    ::metrics::counter!(metrics::HTTP_REQUESTS, "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    ::metrics::histogram!(metrics::HTTP_DURATION, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}
