//! The gateway's public API, end to end: the real gateway and auth services in process, on a
//! fresh PostgreSQL database and a Redis key prefix of their own.

#![allow(clippy::unwrap_used)]

mod auth;
mod bodies;
mod conversations;
mod errors;
mod internal;
mod messages;
mod metrics;
mod rate_limit;
mod shutdown;
mod tls;
mod tokens;

use reqwest::Response;
use serde_json::Value;

/// Asserts `response` is an API error with this status and code, and returns its body.
async fn assert_error(response: Response, status: u16, code: &str) -> Value {
    let actual = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(actual, status, "status, body: {body}");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "an error needs a message: {body}"
    );
    body
}
