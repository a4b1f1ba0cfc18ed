//! The send path under a fixed offered rate: `Messaging.Send` latency and the delay from commit to
//! the event being readable on Kafka. Prints figures; asserts nothing about speed.
//!
//! ```sh
//! cargo bench -p realchat-messaging --bench send_path
//! BENCH_RATE=1000 BENCH_SECONDS=20 BENCH_CONVERSATIONS=100 cargo bench -p realchat-messaging --bench send_path
//! ```
//!
//! It runs the real messaging service in process against the PostgreSQL and broker the tests use
//! (`REALCHAT_TEST_POSTGRES_URL`, `REALCHAT_TEST_KAFKA_BROKERS`), on a fresh database and topics.
//! The load is open-loop: sends are started on a fixed schedule whether or not earlier ones have
//! returned, and each latency is measured from the moment the send was *due*, so a stall shows up
//! in the percentiles instead of silently lowering the rate.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rdkafka::{
    Message as _,
    consumer::{Consumer as _, StreamConsumer},
};
use realchat_proto::{
    events::v1::{Envelope, envelope::Payload},
    messaging::v1::{SendRequest, messaging_client::MessagingClient},
};
use realchat_runtime::Shutdown;

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

fn summary(name: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    println!(
        "{name:<28} n={:<7} p50={:>8.2}ms p90={:>8.2}ms p99={:>8.2}ms max={:>8.2}ms",
        values.len(),
        percentile(&values, 50.0),
        percentile(&values, 90.0),
        percentile(&values, 99.0),
        values.last().copied().unwrap_or(f64::NAN),
    );
}

#[tokio::main]
async fn main() {
    let rate = env_or("BENCH_RATE", 500);
    let seconds = env_or("BENCH_SECONDS", 10);
    let conversations = env_or("BENCH_CONVERSATIONS", 50) as usize;

    // Install the recorder first, so the relay's own figures are kept.
    let metrics = realchat_runtime::telemetry::metrics_handle();
    let db = test_support::TestDatabase::new("bench");
    let kafka = test_support::kafka::fresh_topics().await;
    let mut options = realchat_messaging::Options::new(db.url(), kafka.clone());
    options.consumer_group = test_support::unique("bench-");
    let service = realchat_messaging::Service::build(options).await.unwrap();
    let addr = service.grpc_addr();
    let pool = service.pool().clone();
    let shutdown = Shutdown::new(Duration::from_secs(10));
    let running = tokio::spawn(service.run(shutdown.clone()));

    // Arrange: users and direct conversations, straight into the database.
    let mut pairs = Vec::with_capacity(conversations);
    for _ in 0..conversations {
        let (a, b, c) = (
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
        );
        sqlx::query("INSERT INTO known_users (id, username, registered_at) VALUES ($1, $1::text, now()), ($2, $2::text, now())")
            .bind(a)
            .bind(b)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO conversations (id, kind, created_by, direct_key) VALUES ($1, 'direct', $2, $3)")
            .bind(c)
            .bind(a)
            .bind(format!("{a}:{b}"))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO members (conversation_id, user_id) VALUES ($1, $2), ($1, $3)")
            .bind(c)
            .bind(a)
            .bind(b)
            .execute(&pool)
            .await
            .unwrap();
        pairs.push((c, a));
    }

    // Watch the topic: commit-to-readable delay per message.created.
    let delays = Arc::new(Mutex::new(Vec::new()));
    let consumer: StreamConsumer = kafka
        .consumer_config(&test_support::unique("bench-reader-"))
        .create()
        .unwrap();
    consumer
        .subscribe(&[kafka
            .topics()
            .name(realchat_events::Topic::Messages)
            .as_str()])
        .unwrap();
    let watcher = {
        let delays = delays.clone();
        tokio::spawn(async move {
            while let Ok(Ok(message)) =
                tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await
            {
                let Some(Ok(envelope)) =
                    message.payload().map(<Envelope as prost::Message>::decode)
                else {
                    continue;
                };
                if let Some(Payload::MessageCreated(created)) = envelope.payload {
                    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
                    delays
                        .lock()
                        .unwrap()
                        .push((now as i64 - created.created_at_ms) as f64);
                }
            }
        })
    };

    // Warm up: one message through the whole path, so the reader has joined its group and
    // partition assignment is not counted as delay.
    let mut warmup = MessagingClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    warmup
        .send(SendRequest {
            caller_id: pairs[0].1.to_string(),
            conversation_id: pairs[0].0.to_string(),
            client_msg_id: "warmup".into(),
            body: "warmup".into(),
        })
        .await
        .unwrap();
    while delays.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    delays.lock().unwrap().clear();

    println!("send path: {rate} sends/s offered for {seconds}s over {conversations} conversations");
    let client = MessagingClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (conversation, sender) = pairs[i as usize % pairs.len()];
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let result = client
                .send(SendRequest {
                    caller_id: sender.to_string(),
                    conversation_id: conversation.to_string(),
                    client_msg_id: format!("bench-{i}"),
                    body: "the quick brown fox jumps over the lazy dog".into(),
                })
                .await;
            (result.is_ok(), due.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for task in tasks {
        let (ok, ms) = task.await.unwrap();
        if ok {
            latencies.push(ms);
        } else {
            errors += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the relay finish, then stop watching.
    let deadline = Instant::now() + Duration::from_secs(30);
    while delays.lock().unwrap().len() < latencies.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.abort();
    shutdown.trigger();
    let _ = running.await;

    println!(
        "completed {} sends in {elapsed:.1}s = {:.0} sends/s, {errors} errors",
        latencies.len(),
        latencies.len() as f64 / elapsed
    );
    summary("Send latency", latencies);
    summary(
        "commit -> readable on Kafka",
        delays.lock().unwrap().clone(),
    );
    // The relay's side of that: commit to the broker's acknowledgement, from its histogram (the
    // smallest bucket bound under which each quantile of the rows falls).
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in metrics.render().lines() {
        let Some(rest) = line.strip_prefix("outbox_publish_delay_seconds_bucket{") else {
            continue;
        };
        let (labels, count) = rest.rsplit_once(' ').unwrap_or_default();
        let Some(le) = labels
            .split("le=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
        else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        buckets.push((le, count.parse().unwrap_or(0.0)));
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    for quantile in [0.5, 0.9, 0.99] {
        if let Some((le, _)) = buckets.iter().find(|(_, n)| *n >= quantile * total) {
            println!(
                "relay commit -> broker ack   q={quantile:<5} <= {:>8.2}ms",
                le * 1000.0
            );
        }
    }
}
