//! The limits a run is compared against, measured on the same machine in the same run:
//!
//! - **the database**: the SQL transaction of one send, run by `pgbench` with 8 clients against
//!   the same PostgreSQL, on a scratch database with messaging's own schema. One transaction per
//!   message is what a send costs if nothing is shared between sends.
//! - **the sockets**: a bare WebSocket fan-out server inside the bench (a broadcast channel and a
//!   writer task per socket, nothing else), read by the same client code the scenarios use. No
//!   server that also routes, orders and repairs can beat it on this machine.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures::{SinkExt as _, StreamExt as _, stream};
use realchat_client::{Client, Event, Socket, Tokens};
use tokio::{net::TcpListener, sync::broadcast};
use tokio_tungstenite::tungstenite::{Message as Frame, Utf8Bytes};

/// Messaging's schema, so the limit follows it when it changes.
const SCHEMA: &str = include_str!("../../messaging/migrations/20261126000001_init.sql");

/// Conversations the pgbench clients spread over (two members each, like `direct`).
const CONVERSATIONS: u32 = 64;

/// The work of one send (see messaging's `store::send_all`), as a pgbench script.
const SEND_SCRIPT: &str = r"\set c random(1, :conversations)
\set s random(1, 2)
\set r random(1, 9223372036854775806)
BEGIN;
SELECT c.id, c.kind, c.title, c.created_by, c.created_at, c.last_seq FROM conversations c WHERE c.id = bench_id(:c) AND EXISTS (SELECT 1 FROM members m WHERE m.conversation_id = c.id AND m.user_id = bench_id(:c * 2 + :s)) FOR UPDATE OF c;
SELECT id FROM messages WHERE conversation_id = bench_id(:c) AND sender_id = bench_id(:c * 2 + :s) AND client_msg_id = :r::text;
UPDATE conversations SET last_seq = last_seq + 1, last_activity_at = now() WHERE id = bench_id(:c) RETURNING last_seq \gset
INSERT INTO messages (id, conversation_id, seq, sender_id, client_msg_id, body) VALUES (gen_random_uuid(), bench_id(:c), :last_seq, bench_id(:c * 2 + :s), :r::text, 'benchmark message') RETURNING id, conversation_id, seq, sender_id, client_msg_id, body, created_at;
UPDATE members SET read_seq = GREATEST(read_seq, :last_seq) WHERE conversation_id = bench_id(:c) AND user_id = bench_id(:c * 2 + :s);
SELECT user_id FROM members WHERE conversation_id = bench_id(:c) ORDER BY user_id;
INSERT INTO outbox (topic, key, event_id, event_type, traceparent, payload) VALUES ('messages', :c::text, gen_random_uuid(), 'message.created', '', decode(repeat('ab', 220), 'hex'));
SELECT pg_notify('realchat_outbox', '');
COMMIT;
";

/// Transactions per second of one send's SQL under `pgbench -c 8` for `seconds`, on a scratch
/// database `realchat_bench_limit` (created and dropped here) of the server at `postgres_url`
/// (`postgres://user@host:port`, no database).
pub(crate) fn pgbench_sends(postgres_url: &str, seconds: u32) -> anyhow::Result<f64> {
    let base = postgres_url.trim_end_matches('/');
    let admin = format!("{base}/postgres");
    let scratch = format!("{base}/realchat_bench_limit");
    let psql = |url: &str, sql: &str| -> anyhow::Result<()> {
        let output = Command::new("psql")
            .args([url, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .context("running psql (PostgreSQL's client must be installed)")?;
        if !output.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    };
    psql(&admin, "DROP DATABASE IF EXISTS realchat_bench_limit")?;
    psql(&admin, "CREATE DATABASE realchat_bench_limit")?;
    let result = (|| {
        psql(&scratch, SCHEMA)?;
        psql(
            &scratch,
            &format!(
                "CREATE FUNCTION bench_id(bigint) RETURNS uuid IMMUTABLE LANGUAGE sql
                   AS $$ SELECT lpad(to_hex($1), 32, '0')::uuid $$;
                 INSERT INTO conversations (id, kind, created_by, direct_key)
                   SELECT bench_id(c), 'direct', bench_id(c * 2 + 1), c::text FROM generate_series(1, {CONVERSATIONS}) c;
                 INSERT INTO members (conversation_id, user_id)
                   SELECT bench_id(c), bench_id(c * 2 + s) FROM generate_series(1, {CONVERSATIONS}) c, generate_series(1, 2) s;"
            ),
        )?;
        let script = std::env::temp_dir().join(format!("realchat-send-{}.sql", std::process::id()));
        std::fs::write(&script, SEND_SCRIPT)?;
        let output = Command::new("pgbench")
            .args(["-n", "-c", "8", "-j", "2", "-T", &seconds.to_string()])
            .args(["-D", &format!("conversations={CONVERSATIONS}")])
            .arg("-f")
            .arg(&script)
            .arg(&scratch)
            .output()
            .context("running pgbench (PostgreSQL's pgbench must be installed)");
        let _ = std::fs::remove_file(&script);
        let output = output?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "pgbench failed: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        parse_tps(&stdout).with_context(|| format!("no tps in pgbench's output: {stdout}"))
    })();
    let _ = psql(&admin, "DROP DATABASE IF EXISTS realchat_bench_limit");
    result
}

/// The `tps = 2212.34 (without initial connection time)` figure.
fn parse_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
}

/// Deliveries per second a bare fan-out server reaches writing `messages` frames to `sockets`
/// sockets on loopback, read by the bench's own client.
pub(crate) async fn bare_fanout(sockets: usize, messages: u64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/v1/ws", listener.local_addr()?);
    let (frames, _) = broadcast::channel::<Utf8Bytes>(16_384);
    let subscribe = frames.clone();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let mut rx = subscribe.subscribe();
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let (mut sink, mut source) = ws.split();
                tokio::spawn(async move { while source.next().await.is_some() {} });
                while let Ok(frame) = rx.recv().await {
                    if sink.feed(Frame::Text(frame)).await.is_err() {
                        return;
                    }
                    while let Ok(frame) = rx.try_recv() {
                        if sink.feed(Frame::Text(frame)).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
                let _ = sink.close().await;
            });
        }
    });

    // The tokens are never checked: the bare server only fans out.
    let client = Client::with_tokens(
        "http://127.0.0.1",
        Tokens {
            access_token: "bare".into(),
            refresh_token: "bare".into(),
            user_id: "bare".into(),
        },
    );
    let connected: Vec<anyhow::Result<Socket>> = stream::iter(0..sockets)
        .map(|_| Socket::connect_to(&client, &url))
        .buffer_unordered(32)
        .map(|socket| socket.map_err(anyhow::Error::from))
        .collect()
        .await;
    let counts: Vec<Arc<AtomicU64>> = (0..sockets).map(|_| Arc::default()).collect();
    let mut readers = Vec::new();
    for (socket, count) in connected.into_iter().zip(&counts) {
        let (mut socket, count) = (socket?, Arc::clone(count));
        readers.push(tokio::spawn(async move {
            while let Some(event) = socket.next().await {
                if let Event::Message(_) = event {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while frames.receiver_count() < sockets {
        if Instant::now() > deadline {
            bail!("the bare fan-out server did not get every socket");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let slowest = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    };
    let started = Instant::now();
    for seq in 1..=messages {
        // Stay well inside the channel, so nobody lags and loses frames.
        while seq.saturating_sub(slowest()) > 8_192 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = frames.send(message_frame(seq).into());
        if seq % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while slowest() < messages {
        if Instant::now() > deadline {
            bail!("the bare fan-out did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    server.abort();
    for reader in readers {
        reader.abort();
    }
    Ok((sockets as u64 * messages) as f64 / elapsed)
}

/// A `message` frame the size of a benchmark message's.
fn message_frame(seq: u64) -> String {
    serde_json::json!({"type": "message", "message": {
        "id": "0193f3a2-7b1c-7c3e-9a3b-5f0e1d2c3b4a",
        "conversation_id": "0193f3a2-7b1c-7c3e-9a3b-000000000001",
        "seq": seq,
        "sender_id": "0193f3a2-7b1c-7c3e-9a3b-5f0e1d2c3b4b",
        "client_msg_id": "5f0e1d2c-3b4a-4c3e-9a3b-0193f3a27b1c",
        "body": "benchmark message",
        "created_at": "2026-11-27T00:00:00.000Z",
    }})
    .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_tps() {
        let output = "number of failed transactions: 0 (0.000%)\nlatency average = 3.6 ms\ntps = 2212.345678 (without initial connection time)\n";
        assert_eq!(parse_tps(output), Some(2212.345678));
        assert_eq!(parse_tps("nothing"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bare_server_delivers_every_frame() {
        let rate = bare_fanout(20, 500).await.unwrap();
        assert!(rate > 0.0);
    }
}
