//! Delivery against the real services: auth, messaging and gateway in process, delivery replicas
//! in process (or as processes, to kill), on PostgreSQL, Redis and the broker.

#![allow(clippy::unwrap_used)]

mod faults;
mod frames;
mod order;
mod presence;
mod tls;

use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite;

/// How long a test waits for something that should take milliseconds.
pub(crate) const SOON: Duration = Duration::from_secs(20);

/// The status and body of a WebSocket handshake the server refused.
pub(crate) fn refused_status(error: tungstenite::Error) -> (u16, Value) {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap())
                .unwrap_or(Value::Null);
            (status, body)
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}
