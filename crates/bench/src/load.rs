//! The open-loop load and the checker, shared by every scenario that sends messages.
//!
//! Sends are issued on a fixed schedule whatever the earlier ones are doing, so a stall shows up
//! in the latencies instead of lowering the offered rate. Every socket records what it was handed
//! (after the client's own dedup), and at the end the checker compares that with what the server
//! acknowledged: every acknowledged message must have reached every socket of every member, once,
//! in order.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::{StreamExt as _, stream};
use realchat_client::{Client, Event, Socket};
use tokio::sync::watch;

use crate::report::{Latency, Report};

/// Connections opened at once.
const CONNECT_CONCURRENCY: usize = 32;

/// A conversation under load.
#[derive(Debug, Clone)]
pub(crate) struct Conversation {
    pub(crate) id: String,
    /// Indexes into the users.
    pub(crate) members: Vec<usize>,
    /// Who sends, in turn.
    pub(crate) senders: Vec<usize>,
}

/// What to offer, and where.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) conversations: Vec<Conversation>,
    pub(crate) rate: f64,
    pub(crate) warmup: f64,
    pub(crate) duration: f64,
    /// Longest wait, after the last send, for the last deliveries.
    pub(crate) drain: f64,
    pub(crate) sockets_per_user: usize,
    /// Delivery endpoints to connect to directly (round robin); empty for the server's `/v1/ws`.
    pub(crate) ws_urls: Vec<String>,
    /// A broker outage to cause during the measured part.
    pub(crate) outage: Option<Outage>,
}

/// Stop the broker `after` seconds into the measured part, start it again `length` seconds later.
#[derive(Debug, Clone)]
pub(crate) struct Outage {
    pub(crate) after: f64,
    pub(crate) length: f64,
    /// Shell commands that stop and start the broker.
    pub(crate) stop: String,
    pub(crate) start: String,
}

impl Outage {
    /// Runs the outage from `measured_from`; returns when the broker was back.
    async fn cause(self, measured_from: Instant) -> anyhow::Result<Instant> {
        tokio::time::sleep_until((measured_from + Duration::from_secs_f64(self.after)).into())
            .await;
        eprintln!("outage: {}", self.stop);
        shell(&self.stop).await?;
        tokio::time::sleep(Duration::from_secs_f64(self.length)).await;
        eprintln!("outage: {}", self.start);
        shell(&self.start).await?;
        Ok(Instant::now())
    }
}

/// Runs `command` with `sh -c`, its output on stderr (stdout is the report's).
async fn shell(command: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sh")
        .args(["-c", command])
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .await
        .with_context(|| format!("running `{command}`"))?;
    anyhow::ensure!(status.success(), "`{command}` failed: {status}");
    Ok(())
}

/// What a scenario needs beyond the report.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// With an outage: when the broker was back, and when the last message sent before that
    /// reached its last socket.
    pub(crate) broker_back: Option<Instant>,
    pub(crate) backlog_delivered: Option<Instant>,
}

/// One acknowledged message.
#[derive(Debug, Clone, Copy)]
struct Ack {
    due: Instant,
    measured: bool,
}

/// What one socket was handed, per conversation index: `(seq, arrival)` in arrival order.
#[derive(Debug, Default)]
struct Track {
    arrivals: HashMap<usize, Vec<(i64, Instant)>>,
    /// The first few gaps the socket saw: `(conversation index, expected seq, seq that came)`.
    gaps: Vec<(usize, i64, i64)>,
    gap_count: u64,
    disconnects: u64,
}

/// Violations described, at most this many of each kind, so a failed run says where to look.
const DESCRIBED: usize = 5;

/// Connects one socket per entry of `owners` (a user index), tracking the conversations
/// `conversations_of` gives for its user. Returns the sockets with their user index and the URL
/// they were opened on (empty for the gateway's), and the connect rate.
pub(crate) async fn connect(
    clients: &[Client],
    owners: &[usize],
    ws_urls: &[String],
    conversations_of: impl Fn(usize) -> Vec<String>,
) -> anyhow::Result<(Vec<(usize, Socket, String)>, f64)> {
    let started = Instant::now();
    let sockets: Vec<anyhow::Result<(usize, Socket, String)>> =
        stream::iter(owners.iter().copied().enumerate())
            .map(|(i, user)| {
                let client = &clients[user];
                let url = (!ws_urls.is_empty()).then(|| ws_urls[i % ws_urls.len()].clone());
                async move {
                    let socket = match &url {
                        Some(url) => Socket::connect_to(client, url).await,
                        None => Socket::connect(client).await,
                    }
                    .with_context(|| format!("connecting socket {i}"))?;
                    Ok((user, socket, url.unwrap_or_default()))
                }
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
    let sockets = sockets.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let rate = sockets.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    for (user, socket, _) in &sockets {
        for conversation in conversations_of(*user) {
            socket.track(&conversation, 0);
        }
    }
    Ok((sockets, rate))
}

/// Runs `load` against `clients`, checks the outcome, and writes the figures into `report`.
pub(crate) async fn run(
    clients: &[Client],
    load: &Load,
    report: &mut Report,
) -> anyhow::Result<Outcome> {
    let index: Arc<HashMap<String, usize>> = Arc::new(
        load.conversations
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect(),
    );
    let mut user_conversations: HashMap<usize, Vec<String>> = HashMap::new();
    for conversation in &load.conversations {
        for member in &conversation.members {
            user_conversations
                .entry(*member)
                .or_default()
                .push(conversation.id.clone());
        }
    }
    let owners: Vec<usize> = (0..clients.len())
        .flat_map(|user| std::iter::repeat_n(user, load.sockets_per_user))
        .collect();
    let (sockets, connect_rate) = connect(clients, &owners, &load.ws_urls, |user| {
        user_conversations.get(&user).cloned().unwrap_or_default()
    })
    .await?;
    report.set("sockets", sockets.len());
    report.set("connect_per_s", connect_rate.round());

    // Readers.
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|(user, socket, url)| {
            let reader = read(
                socket,
                Arc::clone(&index),
                Arc::clone(&delivered),
                stopped.clone(),
            );
            (user, url, tokio::spawn(reader))
        })
        .collect();

    // The open-loop sender.
    let total = ((load.warmup + load.duration) * load.rate).round() as u64;
    let measured_from = (load.warmup * load.rate).round() as u64;
    let acked: Arc<Mutex<HashMap<(usize, i64), Ack>>> = Arc::default();
    let send_latency: Arc<Mutex<Latency>> = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now() + Duration::from_millis(200);
    let conversations = load.conversations.len();
    let outage = load
        .outage
        .clone()
        .map(|outage| tokio::spawn(outage.cause(started + Duration::from_secs_f64(load.warmup))));
    let mut sends = Vec::with_capacity(total as usize);
    for k in 0..total {
        let due = started + Duration::from_secs_f64(k as f64 / load.rate);
        tokio::time::sleep_until(due.into()).await;
        let c = (k as usize) % conversations;
        let conversation = &load.conversations[c];
        let sender =
            conversation.senders[(k as usize / conversations) % conversation.senders.len()];
        let (client, id) = (clients[sender].clone(), conversation.id.clone());
        let (acked, send_latency, errors) = (
            Arc::clone(&acked),
            Arc::clone(&send_latency),
            Arc::clone(&errors),
        );
        let measured = k >= measured_from;
        sends.push(tokio::spawn(async move {
            match client.send(&id, "benchmark message").await {
                Ok(message) => {
                    if measured {
                        lock(&send_latency).record(due.elapsed());
                    }
                    lock(&acked).insert((c, message.seq), Ack { due, measured });
                }
                Err(error) => {
                    if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("send failed: {error}");
                    }
                }
            }
        }));
    }
    let sent = sends.len() as u64;
    for send in sends {
        let _ = send.await;
    }
    let sending_done = Instant::now();
    let broker_back = match outage {
        Some(outage) => Some(outage.await.context("the outage task panicked")??),
        None => None,
    };

    // Drain: until every socket of every member has every acknowledged message, or time is up.
    let sockets_of = |c: usize| load.conversations[c].members.len() * load.sockets_per_user;
    let expected: u64 = lock(&acked)
        .keys()
        .map(|(c, _)| sockets_of(*c) as u64)
        .sum();
    let drain_until = Instant::now() + Duration::from_secs_f64(load.drain);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained_in = sending_done.elapsed();
    let _ = stop.send(true);
    let mut tracks = Vec::with_capacity(readers.len());
    let mut urls = Vec::with_capacity(readers.len());
    for (user, url, reader) in readers {
        let (track, dropped) = reader.await.context("a socket reader panicked")?;
        tracks.push((user, track, dropped));
        urls.push(url);
    }

    // The checker.
    let acked = lock(&acked).clone();
    let window = (
        started + Duration::from_secs_f64(load.warmup),
        started + Duration::from_secs_f64(load.warmup + load.duration),
    );
    let (mut lost, mut duplicates, mut reordered, mut gaps, mut raw_duplicates) = (0, 0, 0, 0, 0);
    let (mut delivered_total, mut in_window, mut disconnects) = (0u64, 0u64, 0u64);
    let mut e2e = Latency::default();
    let mut backlog_delivered: Option<Instant> = None;
    let mut member_sockets: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, (user, _, _)) in tracks.iter().enumerate() {
        member_sockets.entry(*user).or_default().push(i);
    }
    // Per socket and conversation: arrival by seq, after counting order and duplicates.
    let mut by_seq: Vec<HashMap<usize, HashMap<i64, Instant>>> = Vec::with_capacity(tracks.len());
    let socket_name = |socket: usize| {
        let (user, url) = (tracks[socket].0, &urls[socket]);
        if url.is_empty() {
            format!("socket {socket} (user {user})")
        } else {
            format!("socket {socket} (user {user}, {url})")
        }
    };
    let mut described = Vec::new();
    for (socket, (_, track, dropped)) in tracks.iter().enumerate() {
        raw_duplicates += dropped;
        gaps += track.gap_count;
        for (c, expected, got) in &track.gaps {
            if described.len() < DESCRIBED {
                described.push(format!(
                    "gap: {} was handed seq {got} of conversation {c} when {expected} was due",
                    socket_name(socket)
                ));
            }
        }
        disconnects += track.disconnects;
        let mut sockets_seqs = HashMap::new();
        for (c, arrivals) in &track.arrivals {
            let mut seqs: HashMap<i64, Instant> = HashMap::with_capacity(arrivals.len());
            let mut highest = 0;
            for (seq, at) in arrivals {
                if seqs.insert(*seq, *at).is_some() {
                    duplicates += 1;
                    continue;
                }
                if *seq < highest {
                    reordered += 1;
                }
                highest = highest.max(*seq);
                delivered_total += 1;
                if (window.0..window.1).contains(at) {
                    in_window += 1;
                }
            }
            sockets_seqs.insert(*c, seqs);
        }
        by_seq.push(sockets_seqs);
    }
    for ((c, seq), ack) in &acked {
        for member in &load.conversations[*c].members {
            for socket in member_sockets.get(member).into_iter().flatten() {
                let Some(at) = by_seq[*socket].get(c).and_then(|seqs| seqs.get(seq)) else {
                    lost += 1;
                    if described.len() < 2 * DESCRIBED {
                        described.push(format!(
                            "lost: {} never had seq {seq} of conversation {c}",
                            socket_name(*socket)
                        ));
                    }
                    continue;
                };
                if ack.measured {
                    e2e.record(at.saturating_duration_since(ack.due));
                }
                if broker_back.is_some_and(|back| ack.due < back) {
                    backlog_delivered = backlog_delivered.max(Some(*at));
                }
            }
        }
    }
    let send_latency = lock(&send_latency).clone();
    let errors = errors.load(Ordering::Relaxed);

    report.set("offered_rate", load.rate);
    report.set("duration_s", load.duration);
    report.set("warmup_s", load.warmup);
    report.set("conversations", load.conversations.len());
    report.set("sent", sent);
    report.set("acked", acked.len());
    report.set("send_errors", errors);
    report.set(
        "acked_per_s",
        acked.values().filter(|a| a.measured).count() as f64 / load.duration,
    );
    report.set("delivered", delivered_total);
    report.set(
        "delivered_per_s",
        (in_window as f64 / load.duration).round(),
    );
    send_latency.write("send", report);
    e2e.write("e2e", report);
    report.set("lost", lost);
    report.set("duplicates", duplicates);
    report.set("duplicates_raw", raw_duplicates);
    report.set("reordered", reordered);
    report.set("gaps", gaps);
    report.set("disconnects", disconnects);
    report.set(
        "drain_s",
        (drained_in.as_secs_f64() * 1000.0).round() / 1000.0,
    );
    report.say(format!(
        "offered     {} msg/s over {} conversations for {} s (+{} s warm-up); {} sockets connected at {:.0}/s",
        load.rate, load.conversations.len(), load.duration, load.warmup,
        tracks.len(), connect_rate
    ));
    report.say(format!(
        "sends       {sent} sent, {} acknowledged, {errors} failed;  {}",
        acked.len(),
        send_latency.line()
    ));
    report.say(format!(
        "end to end  {}  ({} deliveries, {:.0}/s in the measured window)",
        e2e.line(),
        delivered_total,
        in_window as f64 / load.duration
    ));
    report.say(format!(
        "checked     lost {lost}  duplicates {duplicates} (server sent {raw_duplicates} again, dropped by the client)  reordered {reordered}  gaps {gaps}  reconnects {disconnects}"
    ));
    if errors > 0 {
        report.fail(format!("{errors} sends failed"));
    }
    if lost > 0 {
        report.fail(format!("{lost} acknowledged deliveries never arrived"));
    }
    if duplicates > 0 {
        report.fail(format!("{duplicates} messages were handed out twice"));
    }
    if reordered > 0 || gaps > 0 {
        report.fail(format!("{reordered} messages out of order, {gaps} gaps"));
    }
    for line in described {
        report.say(format!("violation   {line}"));
    }
    Ok(Outcome {
        broker_back,
        backlog_delivered,
    })
}

/// Reads one socket until told to stop; returns what it was handed and how many duplicates the
/// client dropped.
async fn read(
    mut socket: Socket,
    index: Arc<HashMap<String, usize>>,
    delivered: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> (Track, u64) {
    let mut track = Track::default();
    loop {
        let event = tokio::select! {
            event = socket.next() => event,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let Some(event) = event else { break };
        match event {
            Event::Message(message) => {
                let at = Instant::now();
                if let Some(c) = index.get(&message.conversation_id) {
                    track
                        .arrivals
                        .entry(*c)
                        .or_default()
                        .push((message.seq, at));
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::Gap {
                conversation_id,
                expected,
                got,
            } => {
                track.gap_count += 1;
                if let Some(c) = index.get(&conversation_id)
                    && track.gaps.len() < DESCRIBED
                {
                    track.gaps.push((*c, expected, got));
                }
            }
            Event::Disconnected { .. } => track.disconnects += 1,
            _ => {}
        }
    }
    let dropped = socket.duplicates_dropped();
    (track, dropped)
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
