//! What can go wrong talking to a server, and what its answers say about retrying.

use std::time::Duration;

use serde_json::Value;

/// What failed below this client (HTTP, TLS, WebSocket, the token store's lock), kept whole so
/// its chain of causes can be read (`{:#}` with anyhow prints it).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an API error.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        /// How long the server asked to wait before trying again (`Retry-After`, on 429 and 503).
        retry_after: Option<Duration>,
    },
    /// The server could not be reached, or the connection broke; the cause says how (refused,
    /// reset, timed out, a certificate not trusted).
    #[error("cannot talk to the server")]
    Transport(#[source] Cause),
    /// The server answered something this client does not understand.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The request needs a login first.
    #[error("not logged in")]
    NotLoggedIn,
    /// The caller passed something the API cannot take (checked before anything is sent).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl Error {
    /// The API error code, if the server gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether trying again later can help: the connection broke, the server was overloaded or
    /// failed (5xx), or it asked the client to slow down (429).
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Error::Transport(_))
            || matches!(self, Error::Api { status, .. } if *status >= 500 || *status == 429)
    }

    /// What the server asked to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// An API error from a status and the body that came with it (`{"error": {"code",
    /// "message"}}`; anything else is code `unknown`).
    pub(crate) fn from_answer(status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        let error: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        Error::Api {
            status,
            code: error["error"]["code"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
            message: error["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            retry_after,
        }
    }
}

/// The wait a `Retry-After` header asks for, in seconds (the form API.md uses).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}
