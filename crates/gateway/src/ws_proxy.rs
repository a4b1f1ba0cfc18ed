//! Proxying an upgraded WebSocket at the byte level, and closing it properly at shutdown.
//!
//! The gateway copies bytes both ways until either side closes. Frames, pings and close codes
//! are delivery's, untouched, with one exception: when the gateway shuts down, it closes each
//! socket itself with `1001` (API.md: the client reconnects and resumes), at a boundary between
//! two of delivery's frames, which it follows for that purpose ([`FrameBoundaries`]).

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The WebSockets the gateway proxies, so that shutdown can close them properly.
#[derive(Debug, Clone, Default)]
pub(crate) struct Proxies {
    closing: CancellationToken,
    tracker: TaskTracker,
}

impl Proxies {
    /// Copies bytes between two upgraded connections once both upgrades complete, until either
    /// side closes or the gateway shuts down.
    pub(crate) fn spawn(&self, client: OnUpgrade, upstream: OnUpgrade) {
        let closing = self.closing.clone();
        self.tracker.spawn(async move {
            let (client, upstream) = match tokio::join!(client, upstream) {
                (Ok(client), Ok(upstream)) => (client, upstream),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::debug!(%error, "a WebSocket upgrade did not complete");
                    return;
                }
            };
            proxy(TokioIo::new(client), TokioIo::new(upstream), closing).await;
        });
    }

    /// Closes every proxied socket with `1001` and waits until they are closed.
    pub(crate) async fn close(&self) {
        self.closing.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// How long a socket may take to be closed properly once the gateway shuts down.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

/// A close frame from the server: `1001`, "server shutting down".
const GOING_AWAY: [u8; 24] = *b"\x88\x16\x03\xe9server shutting down";

/// Copies bytes both ways until either side closes, or until `closing`: then, at the next
/// boundary between delivery's frames, the client gets a `1001` close and both connections end
/// (delivery sees its client leave).
async fn proxy<C, U>(client: C, upstream: U, closing: CancellationToken)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let to_upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
    };
    let to_client = async {
        let mut frames = FrameBoundaries::default();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                biased;
                () = closing.cancelled(), if frames.at_boundary() => {
                    let _ = client_write.write_all(&GOING_AWAY).await;
                    let _ = client_write.shutdown().await;
                    return;
                }
                read = upstream_read.read(&mut buffer) => {
                    let n = match read {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                    frames.feed(&buffer[..n]);
                }
            }
        }
        let _ = client_write.shutdown().await;
    };
    // A client that stopped reading, or a frame that never ends, must not hold the gateway's
    // shutdown: past this, the connection is dropped (1006) whatever it was doing.
    let give_up = async {
        closing.cancelled().await;
        tokio::time::sleep(CLOSE_WITHIN).await;
    };
    // Either direction ending ends the socket: the other side's close follows from it.
    tokio::select! {
        () = to_upstream => {}
        () = to_client => {}
        () = give_up => {}
    }
}

/// Follows a stream of WebSocket frames (RFC 6455 § 5.2) to know when it is between two of them.
#[derive(Debug, Default)]
struct FrameBoundaries {
    /// The header of the frame being read, while incomplete.
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
}

impl FrameBoundaries {
    fn at_boundary(&self) -> bool {
        self.header.is_empty() && self.payload_left == 0
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .map_or(bytes.len(), |left| left.min(bytes.len()));
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if let Some(length) = header_length(&self.header)
                && self.header.len() == length
            {
                self.payload_left = payload_length(&self.header);
                self.header.clear();
            }
        }
    }
}

/// The length of a frame header, once its first two bytes are known.
fn header_length(header: &[u8]) -> Option<usize> {
    let second = *header.get(1)?;
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + extended + mask)
}

/// The payload length a complete frame header gives.
fn payload_length(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => header[2..10]
            .iter()
            .fold(0u64, |length, byte| (length << 8) | u64::from(*byte)),
        length => u64::from(length),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked frame with `payload` bytes of payload.
    fn frame(payload: usize) -> Vec<u8> {
        let mut frame = vec![0x81];
        match payload {
            0..=125 => frame.push(payload as u8),
            126..=65_535 => {
                frame.push(126);
                frame.extend_from_slice(&(payload as u16).to_be_bytes());
            }
            _ => {
                frame.push(127);
                frame.extend_from_slice(&(payload as u64).to_be_bytes());
            }
        }
        frame.extend(std::iter::repeat_n(b'x', payload));
        frame
    }

    #[test]
    fn boundaries_are_found_however_the_stream_is_cut() {
        let stream: Vec<u8> = [frame(0), frame(5), frame(125), frame(300), frame(70_000)].concat();
        let ends: Vec<usize> = [0, 5, 125, 300, 70_000]
            .iter()
            .scan(0, |at, payload| {
                *at += frame(*payload).len();
                Some(*at)
            })
            .collect();
        for cut in [1, 2, 3, 7, 1000, stream.len()] {
            let mut frames = FrameBoundaries::default();
            let mut at = 0;
            for chunk in stream.chunks(cut) {
                frames.feed(chunk);
                at += chunk.len();
                assert_eq!(
                    frames.at_boundary(),
                    ends.contains(&at),
                    "cut {cut}, at {at}"
                );
            }
        }
    }

    #[test]
    fn a_masked_header_counts_its_key() {
        let mut frames = FrameBoundaries::default();
        frames.feed(&[0x81, 0x82, 1, 2, 3, 4]);
        assert!(!frames.at_boundary());
        frames.feed(&[9, 9]);
        assert!(frames.at_boundary());
    }

    #[test]
    fn the_close_frame_says_1001_and_why() {
        assert_eq!(GOING_AWAY[0], 0x88);
        assert_eq!(usize::from(GOING_AWAY[1]), GOING_AWAY.len() - 2);
        assert_eq!(u16::from_be_bytes([GOING_AWAY[2], GOING_AWAY[3]]), 1001);
    }
}
