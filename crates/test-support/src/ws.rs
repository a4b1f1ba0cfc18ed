//! A WebSocket client for tests: connect with a token, read JSON frames with timeouts.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest as _, http::HeaderValue},
};

/// What came off a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A JSON text frame.
    Json(Value),
    /// The server closed, with this code (1005 when none was given).
    Closed(u16),
}

/// An open socket.
#[derive(Debug)]
pub struct Socket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    /// Connects to `url` with `token` as a bearer token; the handshake's error on failure.
    pub async fn try_connect(url: &str, token: Option<&str>) -> Result<Self, tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if let Some(token) = token {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        let (stream, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(request),
        )
        .await
        .map_err(|_| tungstenite::Error::ConnectionClosed)??;
        Ok(Self { stream })
    }

    /// Connects and reads the `ready` frame.
    pub async fn connect(url: &str, token: &str) -> Self {
        let mut socket = Self::try_connect(url, Some(token)).await.unwrap();
        let ready = socket.expect("ready", Duration::from_secs(10)).await;
        assert!(ready["session_id"].is_string(), "{ready}");
        socket
    }

    /// Sends a JSON text frame.
    pub async fn send(&mut self, frame: &Value) {
        self.stream
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    /// Sends a raw message (binary frames, oversized ones).
    pub async fn send_raw(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        self.stream.send(message).await
    }

    /// The next frame, or `None` if nothing came within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Some(Frame::Json(serde_json::from_str(text.as_str()).unwrap()));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Frame::Closed(frame.map_or(1005, |f| u16::from(f.code))));
                }
                Some(Ok(_)) => continue,
                // A reset or an abrupt end: report it as an abnormal closure.
                Some(Err(_)) | None => return Some(Frame::Closed(1006)),
            }
        }
    }

    /// Reads until a frame of `kind` arrives (skipping others), panicking after `timeout`.
    pub async fn expect(&mut self, kind: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Frame::Json(frame)) if frame["type"] == kind => return frame,
                Some(Frame::Json(_)) => continue,
                Some(Frame::Closed(code)) => panic!("closed with {code} while waiting for {kind}"),
                None => panic!("no {kind} frame within {timeout:?}"),
            }
        }
    }

    /// Collects `message` frames of `conversation` until one with `last_seq` arrived; returns
    /// their seqs in arrival order (duplicates included). Other frames are skipped.
    pub async fn seqs_until(
        &mut self,
        conversation: &str,
        last_seq: i64,
        timeout: Duration,
    ) -> Vec<i64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seqs = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Frame::Json(frame))
                    if frame["type"] == "message"
                        && frame["message"]["conversation_id"] == conversation =>
                {
                    let seq = frame["message"]["seq"].as_i64().unwrap();
                    seqs.push(seq);
                    if seq >= last_seq {
                        return seqs;
                    }
                }
                Some(Frame::Json(_)) => continue,
                Some(Frame::Closed(code)) => {
                    panic!("closed with {code} after seqs {seqs:?}, waiting for {last_seq}")
                }
                None => panic!("only seqs {seqs:?} within {timeout:?}, waiting for {last_seq}"),
            }
        }
    }

    /// Waits for the server to close; returns the close code.
    pub async fn closed(&mut self, timeout: Duration) -> u16 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(Frame::Closed(code)) => return code,
                Some(Frame::Json(_)) => continue,
                None => panic!("not closed within {timeout:?}"),
            }
        }
    }
}

/// The status and JSON body of a handshake the server refused (before the upgrade).
///
/// # Panics
/// When the handshake failed some other way.
pub fn refusal(error: tungstenite::Error) -> (u16, Value) {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (status, body)
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}
