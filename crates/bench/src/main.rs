//! `bench`: load and proof. Offers a fixed rate of sends (open loop: a send starts when it is due,
//! whatever the earlier ones are doing, so a stall shows up in the latencies instead of lowering
//! the rate), measures how long each message takes to reach every member's socket, and at the end
//! checks that every acknowledged message reached every member's socket: none lost, none
//! duplicated, none out of order. Any violation makes the run fail.
//!
//! Scenarios so far: `direct` (many 1:1 pairs).
//!
//! ```sh
//! cargo run --release -p bench -- direct --rate 200 --duration 20 --users 100
//! cargo run --release -p bench -- direct --json
//! ```

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use realchat_client::{Client, Error, Event, Socket};

/// Load generator and correctness checker.
#[derive(Debug, Parser)]
#[command(name = "bench", about)]
struct Cli {
    /// What to run.
    scenario: Scenario,
    /// The server's public URL.
    #[arg(long, env = "REALCHAT_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Offered messages per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of measured load (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unmeasured load first.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Users (an even number for `direct`: they pair up).
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Seconds to wait for the last messages to arrive before checking.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Print one JSON object at the end instead of lines for people.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// Many 1:1 conversations, each member with a socket.
    Direct,
}

/// A message the server acknowledged, and when its send was due.
struct Acked {
    due: Instant,
    measured: bool,
}

/// What the sockets saw: per (conversation, seq, member), when it arrived.
#[derive(Default)]
struct Seen {
    arrivals: HashMap<(String, i64, String), Instant>,
    duplicates: u64,
    reordered: u64,
    gaps: u64,
    last: HashMap<(String, String), i64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Registers and logs in a user, waiting out rate limits.
async fn user(url: &str, run: &str, i: usize) -> anyhow::Result<Client> {
    let client = Client::new(url);
    let (name, password) = (format!("b{run}_{i}"), "benchmark password");
    for step in 0..2 {
        loop {
            let result = if step == 0 {
                client.register(&name, password).await.map(drop)
            } else {
                client.login(&name, password).await.map(drop)
            };
            match result {
                Ok(()) => break,
                Err(Error::Api { status: 429, .. }) => {
                    tokio::time::sleep(Duration::from_secs(1)).await
                }
                Err(error) => return Err(error).with_context(|| format!("setting up {name}")),
            }
        }
    }
    Ok(client)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Scenario::Direct = cli.scenario;
    if cli.users < 2 || cli.users % 2 != 0 {
        bail!("--users must be an even number of at least 2");
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let run = format!("{:x}", std::process::id() ^ nanos);
    let mut clients = Vec::new();
    for i in 0..cli.users {
        clients.push(user(&cli.url, &run, i).await?);
    }
    let ids: Vec<String> = clients
        .iter()
        .map(|c| c.tokens().map(|t| t.user_id).unwrap_or_default())
        .collect();
    // A new user becomes usable in conversations once messaging has heard of them.
    let mut conversations = Vec::new();
    for pair in 0..cli.users / 2 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let conversation = loop {
            match clients[pair * 2].open_direct(&ids[pair * 2 + 1]).await {
                Ok(conversation) => break conversation,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(error) => return Err(error).context("opening a conversation"),
            }
        };
        conversations.push(conversation.id);
    }

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut readers = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let mut socket = Socket::connect(client).await?;
        socket.track(&conversations[i / 2], 0);
        let (seen, me) = (Arc::clone(&seen), ids[i].clone());
        readers.push(tokio::spawn(async move {
            while let Some(event) = socket.next().await {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    Event::Message(message) => {
                        let key = (message.conversation_id.clone(), message.seq, me.clone());
                        if seen.arrivals.contains_key(&key) {
                            seen.duplicates += 1;
                            continue;
                        }
                        seen.arrivals.insert(key, Instant::now());
                        let previous = seen
                            .last
                            .insert((message.conversation_id, me.clone()), message.seq)
                            .unwrap_or(0);
                        if message.seq < previous {
                            seen.reordered += 1;
                        }
                    }
                    Event::Gap { .. } => seen.gaps += 1,
                    _ => {}
                }
            }
        }));
    }

    let total = ((cli.warmup + cli.duration) * cli.rate).round() as u64;
    let measured_from = (cli.warmup * cli.rate).round() as u64;
    let acked: Arc<Mutex<HashMap<(String, i64), Acked>>> = Arc::default();
    let send_latency: Arc<Mutex<Vec<f64>>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(200);
    let mut sends = Vec::with_capacity(total as usize);
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / cli.rate);
        tokio::time::sleep_until(due.into()).await;
        let pair = (k as usize) % conversations.len();
        let sender = clients[pair * 2 + (k as usize / conversations.len()) % 2].clone();
        let conversation = conversations[pair].clone();
        let (acked, send_latency, errors) = (
            Arc::clone(&acked),
            Arc::clone(&send_latency),
            Arc::clone(&errors),
        );
        let measured = k >= measured_from;
        sends.push(tokio::spawn(async move {
            match sender.send(&conversation, "benchmark message").await {
                Ok(message) => {
                    if measured {
                        send_latency
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(due.elapsed().as_secs_f64() * 1000.0);
                    }
                    acked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((conversation, message.seq), Acked { due, measured });
                }
                Err(_) => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    let sent = sends.len() as u64;
    for send in sends {
        let _ = send.await;
    }
    let offered_secs = start.elapsed().as_secs_f64();

    // Drain: wait until every acknowledged message reached both members, or the drain time.
    let members = 2usize;
    let drain_until = Instant::now() + Duration::from_secs_f64(cli.drain);
    loop {
        let done = {
            let acked = acked.lock().unwrap_or_else(|p| p.into_inner());
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            acked.len() * members <= seen.arrivals.len()
        };
        if done || Instant::now() > drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for reader in readers {
        reader.abort();
    }

    let acked = acked.lock().unwrap_or_else(|p| p.into_inner());
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let member_ids: HashMap<&str, [&str; 2]> = conversations
        .iter()
        .enumerate()
        .map(|(pair, c)| {
            (
                c.as_str(),
                [ids[pair * 2].as_str(), ids[pair * 2 + 1].as_str()],
            )
        })
        .collect();
    let (mut lost, mut delivered, mut e2e) = (0u64, 0u64, Vec::new());
    for ((conversation, seq), ack) in acked.iter() {
        for member in member_ids[conversation.as_str()] {
            match seen
                .arrivals
                .get(&(conversation.clone(), *seq, member.to_owned()))
            {
                Some(at) => {
                    delivered += 1;
                    if ack.measured {
                        e2e.push(at.duration_since(ack.due).as_secs_f64() * 1000.0);
                    }
                }
                None => lost += 1,
            }
        }
    }
    e2e.sort_by(f64::total_cmp);
    let mut send = send_latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    send.sort_by(f64::total_cmp);
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    let report = serde_json::json!({
        "scenario": "direct",
        "offered_rate": cli.rate,
        "duration_s": cli.duration,
        "users": cli.users,
        "sent": sent,
        "acked": acked.len(),
        "send_errors": errors,
        "delivered": delivered,
        "delivered_per_s": delivered as f64 / offered_secs,
        "send_p50_ms": percentile(&send, 50.0),
        "send_p99_ms": percentile(&send, 99.0),
        "e2e_p50_ms": percentile(&e2e, 50.0),
        "e2e_p90_ms": percentile(&e2e, 90.0),
        "e2e_p99_ms": percentile(&e2e, 99.0),
        "e2e_p999_ms": percentile(&e2e, 99.9),
        "e2e_max_ms": e2e.last().copied().unwrap_or(f64::NAN),
        "lost": lost,
        "duplicates": seen.duplicates,
        "reordered": seen.reordered,
        "gaps": seen.gaps,
    });
    let failed = lost > 0 || seen.duplicates > 0 || seen.reordered > 0 || seen.gaps > 0;
    if cli.json {
        println!("{report}");
    } else {
        println!(
            "direct: {} users, offered {} msg/s for {}+{} s: sent {sent}, acked {}, {errors} send errors",
            cli.users,
            cli.rate,
            cli.warmup,
            cli.duration,
            acked.len()
        );
        println!(
            "send        p50 {:.2} ms  p99 {:.2} ms",
            percentile(&send, 50.0),
            percentile(&send, 99.0)
        );
        println!(
            "end to end  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({:.0} deliveries/s)",
            percentile(&e2e, 50.0),
            percentile(&e2e, 90.0),
            percentile(&e2e, 99.0),
            percentile(&e2e, 99.9),
            e2e.last().copied().unwrap_or(f64::NAN),
            delivered as f64 / offered_secs
        );
        println!(
            "checker     lost {lost}  duplicates {}  reordered {}  gaps {}  => {}",
            seen.duplicates,
            seen.reordered,
            seen.gaps,
            if failed { "FAIL" } else { "ok" }
        );
    }
    if failed {
        bail!("the checker found lost, duplicated or reordered messages");
    }
    Ok(())
}
