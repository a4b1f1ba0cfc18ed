//! API.md § Auth: register, login, refresh, logout, me.

use axum::{extract::State, http::StatusCode};
use realchat_proto::auth::v1::{
    GetUserRequest, LoginRequest, LogoutRequest, RefreshRequest, RegisterRequest, TokenPair, User,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    AppState,
    error::{ApiError, ErrorBody},
    extract::{AuthUser, Json},
};

/// Credentials for `register` and `login`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct Credentials {
    /// 3 to 32 characters of `[a-z0-9_]`, case-insensitive (stored lower-cased).
    #[schema(
        example = "alice",
        min_length = 3,
        max_length = 32,
        pattern = "^[A-Za-z0-9_]{3,32}$"
    )]
    username: String,
    /// 8 to 128 characters.
    #[schema(example = "correct horse battery", min_length = 8, max_length = 128)]
    password: String,
}

/// A refresh token, for `refresh` and `logout`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct RefreshBody {
    refresh_token: String,
}

/// A user account.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserView {
    #[schema(format = Uuid)]
    user_id: String,
    username: String,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            user_id: user.user_id,
            username: user.username,
        }
    }
}

/// An access token and the refresh token that renews it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenView {
    access_token: String,
    refresh_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u32,
    #[schema(format = Uuid)]
    user_id: String,
}

impl From<TokenPair> for TokenView {
    fn from(pair: TokenPair) -> Self {
        Self {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            token_type: "Bearer",
            expires_in: pair.expires_in,
            user_id: pair.user_id,
        }
    }
}

/// Creates an account.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = Credentials,
    responses(
        (status = 201, body = UserView),
        (status = 400, body = ErrorBody, description = "invalid_argument or malformed_json"),
        (status = 409, body = ErrorBody, description = "username_taken"),
        (status = 429, body = ErrorBody, description = "rate_limited"),
    ))]
pub(crate) async fn register(
    State(state): State<AppState>,
    Json(body): Json<Credentials>,
) -> Result<(StatusCode, axum::Json<UserView>), ApiError> {
    let user = state
        .auth
        .clone()
        .register(RegisterRequest {
            username: body.username,
            password: body.password,
        })
        .await?
        .into_inner();
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

/// Logs in: a new access token and a new refresh-token family.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = Credentials,
    responses(
        (status = 200, body = TokenView),
        (status = 401, body = ErrorBody, description = "invalid_credentials"),
        (status = 429, body = ErrorBody, description = "rate_limited"),
    ))]
pub(crate) async fn login(
    State(state): State<AppState>,
    Json(body): Json<Credentials>,
) -> Result<axum::Json<TokenView>, ApiError> {
    let pair = state
        .auth
        .clone()
        .login(LoginRequest {
            username: body.username,
            password: body.password,
        })
        .await?
        .into_inner();
    Ok(axum::Json(pair.into()))
}

/// Exchanges a refresh token for a new pair. The old token is spent; presenting it again revokes
/// the whole family.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses(
        (status = 200, body = TokenView),
        (status = 401, body = ErrorBody, description = "unauthenticated: unknown, spent, expired or revoked"),
    ))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshBody>,
) -> Result<axum::Json<TokenView>, ApiError> {
    let pair = state
        .auth
        .clone()
        .refresh(RefreshRequest {
            refresh_token: body.refresh_token,
        })
        .await?
        .into_inner();
    Ok(axum::Json(pair.into()))
}

/// Revokes the refresh-token family (this login on every device that shares it).
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshBody,
    responses((status = 204, description = "logged out (also for unknown tokens)")))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    Json(body): Json<RefreshBody>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .clone()
        .logout(LogoutRequest {
            refresh_token: body.refresh_token,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The bearer of the access token.
#[utoipa::path(get, path = "/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, body = UserView),
        (status = 401, body = ErrorBody, description = "unauthenticated or token_expired"),
    ))]
pub(crate) async fn me(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<axum::Json<UserView>, ApiError> {
    let found = state
        .auth
        .clone()
        .get_user(GetUserRequest {
            user_id: user.user_id.to_string(),
        })
        .await;
    match found {
        Ok(found) => Ok(axum::Json(found.into_inner().into())),
        // A valid token for an account that no longer exists.
        Err(status) if status.code() == tonic::Code::NotFound => {
            Err(ApiError::unauthenticated("the account no longer exists"))
        }
        Err(status) => Err(status.into()),
    }
}
