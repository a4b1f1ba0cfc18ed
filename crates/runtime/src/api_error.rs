//! The API's error answer, for every HTTP server a client talks to (the gateway, and delivery's
//! `/v1/ws` and `/v1/presence`).
//!
//! Every failure a client can see is an [`ApiError`]: a status, a stable snake_case code, a
//! message written for the client, `Retry-After` on `429`/`503` and `WWW-Authenticate` on `401`,
//! in API.md's body `{"error": {"code", "message"}}`. Internal causes are logged where they are
//! met and never sent. Statuses from the internal services map to it in one place
//! (`From<tonic::Status>`).

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// An error as the API reports it: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn token_expired() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "token_expired",
            "the access token has expired",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this path",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body must be at most {} KiB", limit / 1024),
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "request body must be application/json",
        )
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests, slow down",
            )
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after_secs: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme that would be accepted.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Statuses from the internal services. Their `x-realchat-code` names the API code; without one
/// (a transport failure, a bug) the gRPC code decides.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let message = status.message().to_owned();
        let code = crate::grpc::api_code(&status);
        match (status.code(), code) {
            (Code::InvalidArgument, _) => Self::invalid_argument(message),
            (Code::Unauthenticated, Some("invalid_credentials")) => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "wrong username or password",
            ),
            (Code::Unauthenticated, _) => Self::unauthenticated(message),
            (Code::PermissionDenied, _) => Self::forbidden(message),
            (Code::NotFound, _) => Self::not_found(message),
            (Code::AlreadyExists, Some("username_taken")) => {
                Self::new(StatusCode::CONFLICT, "username_taken", "username is taken")
            }
            (Code::AlreadyExists | Code::Aborted, _) => {
                Self::new(StatusCode::CONFLICT, "conflict", message)
            }
            (Code::FailedPrecondition, _) => Self::new(StatusCode::CONFLICT, "conflict", message),
            (Code::ResourceExhausted, Some("rate_limited")) => Self {
                message,
                ..Self::rate_limited(crate::grpc::retry_after(&status).unwrap_or(1))
            },
            (Code::ResourceExhausted, _) => Self::rate_limited(1),
            (Code::Internal, _) if crate::grpc::refused_by_shutdown(&status) => {
                tracing::warn!(grpc.message = %message, "a backend refused the call while stopping");
                Self::unavailable("a backend service is unavailable, retry shortly")
            }
            (Code::Unknown | Code::Internal, None) if crate::grpc::failed_in_transport(&status) => {
                tracing::warn!(grpc.code = ?status.code(), grpc.message = %message, error = ?std::error::Error::source(&status), "backend unreachable");
                Self::unavailable("a backend service is unavailable, retry shortly")
            }
            (Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled, _) => {
                tracing::warn!(grpc.code = ?status.code(), grpc.message = %message, "backend unavailable");
                Self::unavailable("a backend service is unavailable, retry shortly")
            }
            (other, _) => {
                tracing::error!(grpc.code = ?other, grpc.message = %message, "backend error");
                Self::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_map_to_api_codes() {
        let taken = crate::grpc::status(tonic::Code::AlreadyExists, "username_taken", "x");
        assert_eq!(ApiError::from(taken).code, "username_taken");
        let creds = crate::grpc::status(tonic::Code::Unauthenticated, "invalid_credentials", "x");
        assert_eq!(ApiError::from(creds).status, StatusCode::UNAUTHORIZED);
        let down = ApiError::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(
            (down.status, down.retry_after_secs),
            (StatusCode::SERVICE_UNAVAILABLE, Some(1))
        );
        let throttled = ApiError::from(crate::grpc::rate_limited("slow down", 8));
        assert_eq!(
            (throttled.status, throttled.code, throttled.retry_after_secs),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some(8))
        );
        assert_eq!(throttled.message, "slow down");
        assert_eq!(
            ApiError::from(tonic::Status::internal("boom")).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
