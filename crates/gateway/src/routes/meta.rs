//! Probes, the JWKS and the OpenAPI document.

use std::sync::OnceLock;

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use utoipa::OpenApi as _;

use crate::{AppState, error::ApiError, middleware::token_error, openapi::ApiDoc};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "alive")))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// The gateway can reach what it needs (the auth service).
#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses((status = 200, description = "ready"), (status = 503, description = "not ready")))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    match (state.readiness)().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(missing) => (StatusCode::SERVICE_UNAVAILABLE, missing).into_response(),
    }
}

/// The public keys that verify access tokens (RFC 7517).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "a JWK Set"), (status = 503, description = "auth unreachable")))]
pub(crate) async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keys = state.verifier.public_keys().await.map_err(token_error)?;
    let body = serde_json::json!({ "keys": keys.iter().map(|k| k.to_jwk()).collect::<Vec<_>>() });
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(body),
    )
        .into_response())
}

/// This API as an OpenAPI 3.1 document, generated from the handlers.
pub(crate) async fn openapi() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], doc.clone()).into_response()
}

/// Any path the API does not have.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// A known path with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
