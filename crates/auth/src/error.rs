//! The auth service's errors and their one mapping to gRPC.

use realchat_runtime::grpc::status;
use tonic::Code;

/// Everything that can go wrong in the auth service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value in the request breaks one of the API's rules.
    #[error(transparent)]
    Invalid(#[from] crate::domain::Invalid),
    /// The request is malformed otherwise; the message says which field and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// The username exists already (in any letter case).
    #[error("username is taken")]
    UsernameTaken,
    /// Unknown user or wrong password; deliberately the same error for both.
    #[error("wrong username or password")]
    InvalidCredentials,
    /// Too many wrong passwords for this account lately: the next may be tried after this.
    #[error("too many failed logins for this account: retry later")]
    LoginThrottled(std::time::Duration),
    /// A refresh token that is unknown, expired, spent or revoked.
    #[error("refresh token is not valid")]
    InvalidRefreshToken,
    /// No such user.
    #[error("not found")]
    NotFound,
    /// The database cannot be reached; worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A bug or an unexpected state; the cause is logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        if realchat_runtime::db::is_transient(&error) {
            Error::Unavailable(error)
        } else {
            Error::Internal(error.into())
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(invalid) => status(
                Code::InvalidArgument,
                "invalid_argument",
                invalid.to_string(),
            ),
            Error::InvalidArgument(message) => {
                status(Code::InvalidArgument, "invalid_argument", message)
            }
            Error::UsernameTaken => {
                status(Code::AlreadyExists, "username_taken", error.to_string())
            }
            Error::InvalidCredentials => status(
                Code::Unauthenticated,
                "invalid_credentials",
                error.to_string(),
            ),
            Error::LoginThrottled(wait) => realchat_runtime::grpc::rate_limited(
                error.to_string(),
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            ),
            Error::InvalidRefreshToken => {
                status(Code::Unauthenticated, "unauthenticated", error.to_string())
            }
            Error::NotFound => status(Code::NotFound, "not_found", "user not found"),
            Error::Unavailable(ref cause) => realchat_runtime::grpc::unavailable(cause),
            Error::Internal(ref cause) => realchat_runtime::grpc::internal(cause),
        }
    }
}
