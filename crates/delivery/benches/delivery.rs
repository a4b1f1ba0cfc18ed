//! Delivery under load: end-to-end latency at a fixed offered rate, and the memory an idle socket
//! costs. Prints figures; asserts nothing about speed (but does count lost messages).
//!
//! ```sh
//! cargo bench -p realchat-delivery --bench delivery
//! BENCH_RATE=500 BENCH_SECONDS=30 BENCH_PAIRS=100 BENCH_IDLE_SOCKETS=5000 cargo bench -p realchat-delivery --bench delivery
//! ```
//!
//! Auth, messaging and the gateway run in this process, against the PostgreSQL, Redis and broker
//! the tests use; the delivery replica runs as a process of its own (the binary built with the
//! bench), so its memory can be read from `/proc` without the load generator's in it.
//!
//! - **End to end**: `BENCH_PAIRS` direct conversations, each member with a socket. Sends go through
//!   the gateway's HTTP API on a fixed schedule (open loop: a send is started when it is due,
//!   whatever the earlier ones are doing), alternating senders. Latency is from the moment a send
//!   was due to the moment the *other* member's socket got the frame.
//! - **Idle sockets**: then `BENCH_IDLE_SOCKETS` more sockets are opened and left idle; the
//!   replica's resident memory before and after, divided by their number, is the cost of one.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

/// (conversation, seq, recipient) -> when the recipient's socket got it.
type Arrivals = HashMap<(String, i64, String), Instant>;
/// (conversation, seq, recipient, when the send was due), for acknowledged sends.
type Sent = Vec<(String, i64, String, Instant)>;

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use serde_json::{Value, json};
use test_support::{TestApp, ws::Socket};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Resident set size of a process, in bytes, from `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::main]
async fn main() {
    let rate = env_or("BENCH_RATE", 200);
    let seconds = env_or("BENCH_SECONDS", 20);
    let warmup = env_or("BENCH_WARMUP_SECONDS", 3);
    let pairs = env_or("BENCH_PAIRS", 50) as usize;
    let idle = env_or("BENCH_IDLE_SOCKETS", 5000) as usize;

    let app = TestApp::builder()
        .gateway(|o| {
            o.auth_ip_burst = 1_000_000;
            o.user_burst = 1_000_000;
            o.user_rate = 1_000_000.0;
        })
        .spawn()
        .await;
    let (port, admin) = (test_support::free_port(), test_support::free_port());
    let mut replica = Command::new(env!("CARGO_BIN_EXE_delivery"))
        .env("REALCHAT_DELIVERY_ADDR", format!("127.0.0.1:{port}"))
        .env("REALCHAT_DELIVERY_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .env(
            "REALCHAT_AUTH_ENDPOINT",
            format!("http://{}", app.auth_addr),
        )
        .env(
            "REALCHAT_MESSAGING_ENDPOINT",
            format!("http://{}", app.messaging_addr),
        )
        .env("REALCHAT_REDIS_URL", test_support::redis_url())
        .env(
            "REALCHAT_DELIVERY_REDIS_PREFIX",
            test_support::unique("rcbench:") + ":",
        )
        .env(
            "REALCHAT_DELIVERY_CONSUMER_GROUP",
            test_support::unique("bench-"),
        )
        .env("REALCHAT_KAFKA_BROKERS", &app.kafka.brokers)
        .env("REALCHAT_KAFKA_TOPIC_PREFIX", &app.kafka.topic_prefix)
        .env("REALCHAT_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/v1/ws");

    println!("registering {} users", pairs * 2);
    let mut users = Vec::new();
    for _ in 0..pairs * 2 {
        users.push(app.member().await);
    }
    test_support::eventually(
        "the replica to accept sockets",
        Duration::from_secs(30),
        || {
            let (url, token) = (url.clone(), users[0].access_token.clone());
            async move { Socket::try_connect(&url, Some(&token)).await.ok().map(drop) }
        },
    )
    .await;
    let mut conversations = Vec::new();
    for pair in 0..pairs {
        conversations.push(app.direct(&users[pair * 2], &users[pair * 2 + 1]).await);
    }

    // Each socket's reader records when each (conversation, seq) arrived.
    let arrivals: Arc<Mutex<Arrivals>> = Arc::default();
    let mut readers = Vec::new();
    for user in &users {
        let mut socket = Socket::connect(&url, &user.access_token).await;
        let (arrivals, me) = (Arc::clone(&arrivals), user.user_id.clone());
        readers.push(tokio::spawn(async move {
            while let Some(frame) = socket.next(Duration::from_secs(3600)).await {
                let test_support::ws::Frame::Json(frame) = frame else {
                    break;
                };
                if frame["type"] == "message" {
                    let key = (
                        frame["message"]["conversation_id"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                        frame["message"]["seq"].as_i64().unwrap(),
                        me.clone(),
                    );
                    arrivals
                        .lock()
                        .unwrap()
                        .entry(key)
                        .or_insert_with(Instant::now);
                }
            }
        }));
    }

    // Open loop: send k is due at start + k / rate.
    let total = rate * (seconds + warmup);
    println!("offering {rate} msg/s for {warmup}+{seconds} s over {pairs} conversations");
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let send_latency: Arc<Mutex<Vec<f64>>> = Arc::default();
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let pair = (k as usize) % pairs;
        let (from, to) = if (k as usize / pairs).is_multiple_of(2) {
            (pair * 2, pair * 2 + 1)
        } else {
            (pair * 2 + 1, pair * 2)
        };
        let (http, base) = (app.http.clone(), app.base.clone());
        let (token, conversation, recipient) = (
            users[from].access_token.clone(),
            conversations[pair].clone(),
            users[to].user_id.clone(),
        );
        let (sent, errors, send_latency) = (
            Arc::clone(&sent),
            Arc::clone(&errors),
            Arc::clone(&send_latency),
        );
        let measured = k >= rate * warmup;
        tasks.push(tokio::spawn(async move {
            let answer = http
                .post(format!("{base}/v1/conversations/{conversation}/messages"))
                .bearer_auth(token)
                .json(&json!({"client_msg_id": format!("bench-{k}"), "body": "benchmark message"}))
                .send()
                .await;
            match answer {
                Ok(response) if response.status() == 201 => {
                    let message: Value = response.json().await.unwrap();
                    if measured {
                        send_latency
                            .lock()
                            .unwrap()
                            .push(due.elapsed().as_secs_f64() * 1000.0);
                        sent.lock().unwrap().push((
                            conversation,
                            message["seq"].as_i64().unwrap(),
                            recipient,
                            due,
                        ));
                    }
                }
                _ => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Let the last frames arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let sent = sent.lock().unwrap().clone();
    let arrivals = arrivals.lock().unwrap().clone();
    let mut e2e = Vec::new();
    let mut lost = 0;
    for (conversation, seq, recipient, due) in &sent {
        match arrivals.get(&(conversation.clone(), *seq, recipient.clone())) {
            Some(at) => e2e.push(at.duration_since(*due).as_secs_f64() * 1000.0),
            None => lost += 1,
        }
    }
    e2e.sort_by(f64::total_cmp);
    let mut send = send_latency.lock().unwrap().clone();
    send.sort_by(f64::total_cmp);
    println!(
        "send (HTTP, due to answer)  n={:<6} p50={:>7.2}ms p99={:>7.2}ms max={:>7.2}ms errors={}",
        send.len(),
        percentile(&send, 50.0),
        percentile(&send, 99.0),
        send.last().copied().unwrap_or(f64::NAN),
        errors.load(std::sync::atomic::Ordering::Relaxed),
    );
    println!(
        "end to end (due to frame)   n={:<6} p50={:>7.2}ms p90={:>7.2}ms p99={:>7.2}ms max={:>7.2}ms lost={lost}",
        e2e.len(),
        percentile(&e2e, 50.0),
        percentile(&e2e, 90.0),
        percentile(&e2e, 99.0),
        e2e.last().copied().unwrap_or(f64::NAN),
    );

    // Idle sockets: the replica's memory before and after opening them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_bytes(replica.id());
    let mut idle_sockets = Vec::with_capacity(idle);
    let opened = Instant::now();
    for i in 0..idle {
        let mut request = url.as_str().into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", users[i % users.len()].access_token)
                .parse()
                .unwrap(),
        );
        let (mut stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        // Read `ready`, so the session is fully set up before measuring.
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Text(_)) {
                break;
            }
        }
        idle_sockets.push(stream);
    }
    let connect_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_bytes(replica.id());
    println!(
        "idle sockets                n={idle} opened in {connect_secs:.1}s ({:.0}/s); replica RSS {:.1} MiB -> {:.1} MiB; {:.1} KiB per socket",
        idle as f64 / connect_secs,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        (after.saturating_sub(before)) as f64 / idle as f64 / 1024.0,
    );
    drop(idle_sockets);
    for reader in readers {
        reader.abort();
    }
    let _ = replica.kill();
    let _ = replica.wait();
}
