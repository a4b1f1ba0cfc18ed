//! The profile service's errors and their one mapping to gRPC.

use realchat_runtime::grpc::status;
use tonic::Code;

/// Everything that can go wrong in the profile service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message says which field and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// A value in the request breaks one of the API's rules.
    #[error(transparent)]
    Invalid(#[from] crate::domain::Invalid),
    /// No such profile (yet).
    #[error("profile not found")]
    NotFound,
    /// The database cannot be reached; worth retrying.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Auth could not be asked whether a user exists; worth retrying.
    #[error("auth unavailable: {0}")]
    AuthUnavailable(String),
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
            Error::InvalidArgument(message) => {
                status(Code::InvalidArgument, "invalid_argument", message)
            }
            Error::Invalid(invalid) => status(
                Code::InvalidArgument,
                "invalid_argument",
                invalid.to_string(),
            ),
            Error::NotFound => status(Code::NotFound, "not_found", "profile not found"),
            Error::Unavailable(ref cause) => realchat_runtime::grpc::unavailable(cause),
            Error::AuthUnavailable(ref cause) => realchat_runtime::grpc::unavailable(cause),
            Error::Internal(ref cause) => realchat_runtime::grpc::internal(cause),
        }
    }
}
