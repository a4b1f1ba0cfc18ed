//! Probes, the JWKS and the OpenAPI document.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

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

/// The gateway can reach what it needs (auth and messaging). Anyone can ask, so the answer is
/// kept for a second (each real check asks auth and messaging) and says only yes or no: why not
/// is in the logs and on the admin port's `/readyz`.
#[utoipa::path(get, path = "/readyz", tag = "meta",
    responses((status = 200, description = "ready"),
        (status = 503, description = "not ready", body = crate::error::ErrorBody)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.public_ready.ready(&state.readiness).await {
        (StatusCode::OK, "ready").into_response()
    } else {
        ApiError::unavailable("not ready").into_response()
    }
}

/// The public readiness answer and when it was found.
#[derive(Debug, Default)]
pub(crate) struct LastAnswer(tokio::sync::Mutex<Option<(Instant, bool)>>);

impl LastAnswer {
    /// How long an answer is reused.
    const FRESH: Duration = Duration::from_secs(1);

    /// Whether the gateway is ready, checked at most once per [`Self::FRESH`]: callers that come
    /// while a check runs wait for it and share its answer.
    async fn ready(&self, readiness: &realchat_runtime::admin::Readiness) -> bool {
        let mut last = self.0.lock().await;
        if let Some((at, ready)) = *last
            && at.elapsed() < Self::FRESH
        {
            return ready;
        }
        let ready = match readiness().await {
            Ok(()) => true,
            Err(why) => {
                tracing::info!(%why, "not ready");
                false
            }
        };
        *last = Some((Instant::now(), ready));
        ready
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
