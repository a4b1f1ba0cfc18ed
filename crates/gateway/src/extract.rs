//! Extractors that fail with [`ApiError`]s instead of axum's plain-text rejections.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::{MAX_BODY_BYTES, error::ApiError};

/// A JSON body. Wrong content type is `415`, unparsable JSON `400 malformed_json`, a missing or
/// mistyped field `400 invalid_argument`, more than 64 KiB `413`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => ApiError::unsupported_media_type(),
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::malformed_json(clean(&e.body_text()))
                }
                JsonRejection::JsonDataError(e) => {
                    ApiError::invalid_argument(clean(&e.body_text()))
                }
                JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::payload_too_large(MAX_BODY_BYTES)
                }
                other => ApiError::malformed_json(clean(&other.body_text())),
            }),
        }
    }
}

/// serde's messages are good; axum's prefix ("Failed to deserialize the JSON body into the target
/// type: ") is noise for a client.
fn clean(text: &str) -> String {
    let text = text.split_once(": ").map_or(text, |(_, rest)| rest);
    text.to_owned()
}

/// The client's address: the TCP peer, or the first `X-Forwarded-For` hop when the gateway is
/// configured to trust a proxy in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Set as a request extension when `X-Forwarded-For` is to be trusted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrustForwardedFor;

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.extensions.get::<TrustForwardedFor>().is_some()
            && let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return Ok(Self(ip));
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| Self(addr.ip()))
            .ok_or_else(ApiError::internal)
    }
}

/// The authenticated caller, put in the request by the authentication middleware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: Uuid,
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthUser>()
            .copied()
            .ok_or_else(|| ApiError::unauthenticated("missing bearer token"))
    }
}

/// Path parameters; one that does not decode (percent-encoded bytes that are not UTF-8) is
/// `400 invalid_argument`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| ApiError::invalid_argument(clean(&rejection.body_text())))
    }
}

/// Query parameters; anything unparsable is `400 invalid_argument`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| ApiError::invalid_argument(clean(&rejection.body_text())))
    }
}
