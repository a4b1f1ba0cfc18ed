//! The messaging service's errors and their one mapping to gRPC.

use realchat_runtime::grpc::status;
use tonic::Code;

/// Everything that can go wrong in the messaging service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value in the request breaks one of the API's rules.
    #[error(transparent)]
    Invalid(#[from] crate::domain::Invalid),
    /// The request is malformed otherwise; the message says which field and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such conversation, or the caller is not a member (indistinguishable on purpose).
    #[error("conversation not found")]
    NotFound,
    /// A member not in the conversation (for removals).
    #[error("{0}")]
    MemberNotFound(String),
    /// Authenticated and a member, but not allowed (e.g. adding members to a direct chat).
    #[error("{0}")]
    Forbidden(String),
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
            Error::Invalid(invalid) => status(
                Code::InvalidArgument,
                "invalid_argument",
                invalid.to_string(),
            ),
            Error::InvalidArgument(message) => {
                status(Code::InvalidArgument, "invalid_argument", message)
            }
            Error::NotFound => status(Code::NotFound, "not_found", "conversation not found"),
            Error::MemberNotFound(message) => status(Code::NotFound, "not_found", message),
            Error::Forbidden(message) => status(Code::PermissionDenied, "forbidden", message),
            Error::Unavailable(ref cause) => realchat_runtime::grpc::unavailable(cause),
            Error::AuthUnavailable(ref cause) => realchat_runtime::grpc::unavailable(cause),
            Error::Internal(ref cause) => realchat_runtime::grpc::internal(cause),
        }
    }
}
