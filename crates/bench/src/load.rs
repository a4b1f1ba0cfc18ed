//! The open-loop load and the checker, shared by every scenario that sends messages.
//!
//! Sends are issued on a fixed schedule whatever the earlier ones are doing, so a stall shows up
//! in the latencies instead of lowering the offered rate. Every socket records what it was handed
//! (after the client's own dedup) and what the client dropped: frames the server sent again
//! (allowed: at least once), and frames that came after a later message of their conversation
//! (not allowed: out of order). At the end the checker ([`check`]) compares that with what the
//! server acknowledged: every acknowledged message must have reached every socket of every
//! member, once, in order, as the message that was acknowledged under its seq.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash as _, Hasher as _},
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
pub(crate) async fn shell(command: &str) -> anyhow::Result<()> {
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
pub(crate) struct Ack {
    pub(crate) due: Instant,
    pub(crate) measured: bool,
    /// Which message it was ([`id_key`] of its id).
    pub(crate) id: u64,
}

/// A message id as a number, so a socket's record of hundreds of thousands of arrivals stays
/// small.
pub(crate) fn id_key(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

/// What one socket was handed, per conversation index: `(seq, message id key, arrival)` in
/// arrival order.
#[derive(Debug, Default)]
pub(crate) struct Track {
    pub(crate) arrivals: HashMap<usize, Vec<(i64, u64, Instant)>>,
    /// The first few gaps the socket saw: `(conversation index, expected seq, seq that came)`.
    gaps: Vec<(usize, i64, i64)>,
    gap_count: u64,
    pub(crate) disconnects: u64,
    /// Frames the client dropped: sent again, and out of order.
    duplicates_dropped: u64,
    late_dropped: u64,
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
            socket.track(&conversation, 0)?;
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
                None,
            );
            (user, url, tokio::spawn(reader))
        })
        .collect();

    // The open-loop sender.
    let started = Instant::now() + Duration::from_millis(200);
    let outage = load
        .outage
        .clone()
        .map(|outage| tokio::spawn(outage.cause(started + Duration::from_secs_f64(load.warmup))));
    let log = send_open_loop(clients, load, started).await;
    let sending_done = Instant::now();
    let broker_back = match outage {
        Some(outage) => Some(outage.await.context("the outage task panicked")??),
        None => None,
    };
    // Drain: until every socket of every member has every acknowledged message, or time is up.
    let sockets_of = |c: usize| load.conversations[c].members.len() * load.sockets_per_user;
    let expected: u64 = log.acked.keys().map(|(c, _)| sockets_of(*c) as u64).sum();
    let drain_until = Instant::now() + Duration::from_secs_f64(load.drain);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained_in = sending_done.elapsed();
    let _ = stop.send(true);
    let mut tracks = Vec::with_capacity(readers.len());
    let mut urls = Vec::with_capacity(readers.len());
    for (user, url, reader) in readers {
        let track = reader.await.context("a socket reader panicked")?;
        tracks.push((user, track));
        urls.push(url);
    }

    // The checker.
    let window = (
        started + Duration::from_secs_f64(load.warmup),
        started + Duration::from_secs_f64(load.warmup + load.duration),
    );
    let members: Vec<&[usize]> = load
        .conversations
        .iter()
        .map(|c| c.members.as_slice())
        .collect();
    let checked = check(&log.acked, &members, &tracks, &urls, window, broker_back);
    report_run(
        report,
        load,
        &log,
        &checked,
        (tracks.len(), connect_rate),
        drained_in,
    );
    Ok(Outcome {
        broker_back,
        backlog_delivered: checked.backlog_delivered,
    })
}

/// The figures of a run, and its verdict, into `report`. `sockets` is how many connected and at
/// what rate.
fn report_run(
    report: &mut Report,
    load: &Load,
    log: &SendLog,
    checked: &Checked,
    sockets: (usize, f64),
    drained_in: Duration,
) {
    let SendLog {
        acked,
        latency,
        sent,
        answered,
        errors,
        collisions,
    } = log;
    report.set("offered_rate", load.rate);
    report.set("duration_s", load.duration);
    report.set("warmup_s", load.warmup);
    report.set("conversations", load.conversations.len());
    report.set("sent", *sent);
    report.set("acked", *answered);
    report.set("send_errors", *errors);
    report.set(
        "acked_per_s",
        acked.values().filter(|a| a.measured).count() as f64 / load.duration,
    );
    report.set("delivered", checked.delivered_total);
    report.set(
        "delivered_per_s",
        (checked.in_window as f64 / load.duration).round(),
    );
    latency.write("send", report);
    checked.e2e.write("e2e", report);
    report.set("lost", checked.lost);
    report.set("duplicates", checked.duplicates);
    report.set("duplicates_raw", checked.raw_duplicates);
    report.set("reordered", checked.reordered);
    report.set("mismatched", checked.mismatched);
    report.set("seq_collisions", *collisions);
    report.set("gaps", checked.gaps);
    report.set("disconnects", checked.disconnects);
    report.set(
        "drain_s",
        (drained_in.as_secs_f64() * 1000.0).round() / 1000.0,
    );
    report.say(format!(
        "offered     {} msg/s over {} conversations for {} s (+{} s warm-up); {} sockets connected at {:.0}/s",
        load.rate,
        load.conversations.len(),
        load.duration,
        load.warmup,
        sockets.0,
        sockets.1
    ));
    report.say(format!(
        "sends       {sent} sent, {answered} acknowledged, {errors} failed;  {}",
        latency.line()
    ));
    report.say(format!(
        "end to end  {}  ({} deliveries, {:.0}/s in the measured window)",
        checked.e2e.line(),
        checked.delivered_total,
        checked.in_window as f64 / load.duration
    ));
    report.say(checked.line());
    if *errors > 0 {
        report.fail(format!("{errors} sends failed"));
    }
    if *collisions > 0 {
        report.fail(format!(
            "{collisions} acknowledgements gave a seq already given to another message"
        ));
    }
    if answered + errors != *sent {
        report.fail(format!(
            "{sent} sends issued, but {answered} acknowledged and {errors} failed"
        ));
    }
    checked.judge(report);
}

/// What the open-loop sender saw.
#[derive(Debug, Default)]
struct SendLog {
    /// Acknowledged, by (conversation index, seq).
    acked: HashMap<(usize, i64), Ack>,
    /// From each measured send's due time to its acknowledgement.
    latency: Latency,
    sent: u64,
    answered: u64,
    errors: u64,
    /// Acknowledgements that gave a seq already acknowledged for another message.
    collisions: u64,
}

/// Sends on a fixed schedule from `started`, whatever earlier sends are doing (a stall shows up
/// as latency, not as a lower rate): round robin over the conversations, each from its senders
/// in turn. Returns once every send was answered.
async fn send_open_loop(clients: &[Client], load: &Load, started: Instant) -> SendLog {
    let total = ((load.warmup + load.duration) * load.rate).round() as u64;
    let measured_from = (load.warmup * load.rate).round() as u64;
    let conversations = load.conversations.len();
    let log: Arc<Mutex<SendLog>> = Arc::default();
    let mut sends = Vec::with_capacity(total as usize);
    for k in 0..total {
        let due = started + Duration::from_secs_f64(k as f64 / load.rate);
        tokio::time::sleep_until(due.into()).await;
        let c = (k as usize) % conversations;
        let conversation = &load.conversations[c];
        let sender =
            conversation.senders[(k as usize / conversations) % conversation.senders.len()];
        let (client, id, log) = (
            clients[sender].clone(),
            conversation.id.clone(),
            Arc::clone(&log),
        );
        let measured = k >= measured_from;
        sends.push(tokio::spawn(async move {
            let result = client.send(&id, "benchmark message").await;
            let mut log = lock(&log);
            match result {
                Ok(message) => {
                    if measured {
                        log.latency.record(due.elapsed());
                    }
                    log.answered += 1;
                    let ack = Ack {
                        due,
                        measured,
                        id: id_key(&message.id),
                    };
                    if let Some(earlier) = log.acked.insert((c, message.seq), ack)
                        && earlier.id != ack.id
                    {
                        log.collisions += 1;
                    }
                }
                Err(error) => {
                    log.errors += 1;
                    if log.errors <= 5 {
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
    let mut log = std::mem::take(&mut *lock(&log));
    log.sent = sent;
    log
}

/// What the checker found.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// Acknowledged deliveries that never came (per member socket).
    pub(crate) lost: u64,
    /// Messages the client handed out twice (its dedup failed).
    pub(crate) duplicates: u64,
    /// Messages out of order: handed out after a later one, or dropped by the client because
    /// they came after a later one.
    pub(crate) reordered: u64,
    pub(crate) gaps: u64,
    /// Frames the server sent again, which the client dropped (allowed).
    pub(crate) raw_duplicates: u64,
    /// Deliveries of a seq that carried another message than the one acknowledged under it.
    pub(crate) mismatched: u64,
    pub(crate) delivered_total: u64,
    /// Deliveries that arrived in the measured window.
    pub(crate) in_window: u64,
    pub(crate) disconnects: u64,
    /// From a measured send's due time to each member socket's arrival.
    pub(crate) e2e: Latency,
    /// When the last message acknowledged before `broker_back` reached its last socket.
    pub(crate) backlog_delivered: Option<Instant>,
    /// A few violations, described.
    pub(crate) described: Vec<String>,
}

impl Checked {
    /// The checker's line for people.
    pub(crate) fn line(&self) -> String {
        format!(
            "checked     lost {}  duplicates {} (server sent {} again, dropped by the client)  reordered {}  gaps {}  mismatched {}  reconnects {}",
            self.lost,
            self.duplicates,
            self.raw_duplicates,
            self.reordered,
            self.gaps,
            self.mismatched,
            self.disconnects
        )
    }

    /// Fails `report` for every broken promise (lost, twice, out of order, gaps, mismatched),
    /// and names the first few.
    pub(crate) fn judge(&self, report: &mut Report) {
        if self.lost > 0 {
            report.fail(format!(
                "{} acknowledged deliveries never arrived",
                self.lost
            ));
        }
        if self.duplicates > 0 {
            report.fail(format!(
                "{} messages were handed out twice",
                self.duplicates
            ));
        }
        if self.reordered > 0 || self.gaps > 0 {
            report.fail(format!(
                "{} messages out of order, {} gaps",
                self.reordered, self.gaps
            ));
        }
        if self.mismatched > 0 {
            report.fail(format!(
                "{} deliveries carried another message than the one acknowledged under their seq",
                self.mismatched
            ));
        }
        for line in &self.described {
            report.say(format!("violation   {line}"));
        }
    }
}

/// Compares what was acknowledged (per conversation index and seq) with what every socket was
/// handed. `tracks` are `(user index, track)`; `urls` name each socket's endpoint (empty for the
/// gateway's); `members` are each conversation's user indexes.
pub(crate) fn check(
    acked: &HashMap<(usize, i64), Ack>,
    members: &[&[usize]],
    tracks: &[(usize, Track)],
    urls: &[String],
    window: (Instant, Instant),
    broker_back: Option<Instant>,
) -> Checked {
    let mut checked = Checked::default();
    let mut member_sockets: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, (user, _)) in tracks.iter().enumerate() {
        member_sockets.entry(*user).or_default().push(i);
    }
    let socket_name = |socket: usize| {
        let user = tracks[socket].0;
        match urls.get(socket).filter(|url| !url.is_empty()) {
            Some(url) => format!("socket {socket} (user {user}, {url})"),
            None => format!("socket {socket} (user {user})"),
        }
    };
    // Per socket and conversation: (message id key, arrival) by seq.
    type BySeq = HashMap<usize, HashMap<i64, (u64, Instant)>>;
    let mut by_seq: Vec<BySeq> = Vec::with_capacity(tracks.len());
    for (socket, (_, track)) in tracks.iter().enumerate() {
        checked.raw_duplicates += track.duplicates_dropped;
        checked.reordered += track.late_dropped;
        checked.gaps += track.gap_count;
        checked.disconnects += track.disconnects;
        for (c, expected, got) in &track.gaps {
            if checked.described.len() < DESCRIBED {
                checked.described.push(format!(
                    "gap: {} was handed seq {got} of conversation {c} when {expected} was due",
                    socket_name(socket)
                ));
            }
        }
        let mut sockets_seqs = HashMap::new();
        for (c, arrivals) in &track.arrivals {
            let mut seqs: HashMap<i64, (u64, Instant)> = HashMap::with_capacity(arrivals.len());
            let mut highest = 0;
            for (seq, id, at) in arrivals {
                if seqs.insert(*seq, (*id, *at)).is_some() {
                    checked.duplicates += 1;
                    continue;
                }
                if *seq < highest {
                    checked.reordered += 1;
                }
                highest = highest.max(*seq);
                checked.delivered_total += 1;
                if (window.0..window.1).contains(at) {
                    checked.in_window += 1;
                }
            }
            sockets_seqs.insert(*c, seqs);
        }
        by_seq.push(sockets_seqs);
    }
    for ((c, seq), ack) in acked {
        for member in members[*c] {
            for socket in member_sockets.get(member).into_iter().flatten() {
                let Some((id, at)) = by_seq[*socket].get(c).and_then(|seqs| seqs.get(seq)) else {
                    checked.lost += 1;
                    if checked.described.len() < 2 * DESCRIBED {
                        checked.described.push(format!(
                            "lost: {} never had seq {seq} of conversation {c}",
                            socket_name(*socket)
                        ));
                    }
                    continue;
                };
                if *id != ack.id {
                    checked.mismatched += 1;
                    if checked.described.len() < 3 * DESCRIBED {
                        checked.described.push(format!(
                            "mismatched: {} was handed another message as seq {seq} of conversation {c} than the one acknowledged",
                            socket_name(*socket)
                        ));
                    }
                }
                if ack.measured {
                    checked.e2e.record(at.saturating_duration_since(ack.due));
                }
                if broker_back.is_some_and(|back| ack.due < back) {
                    checked.backlog_delivered = checked.backlog_delivered.max(Some(*at));
                }
            }
        }
    }
    checked
}

/// A typing notice a reader sends now and then, as a person would while writing.
#[derive(Debug, Clone)]
pub(crate) struct Typing {
    pub(crate) conversation_id: String,
    pub(crate) every: Duration,
}

/// Reads one socket until told to stop (sending `typing` notices meanwhile, if given); returns what it was handed and what the client dropped.
pub(crate) async fn read(
    mut socket: Socket,
    index: Arc<HashMap<String, usize>>,
    delivered: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
    typing: Option<Typing>,
) -> Track {
    let mut track = Track::default();
    let mut typing_tick = typing.as_ref().map(|t| {
        let mut tick = tokio::time::interval(t.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    loop {
        let event = tokio::select! {
            event = socket.next() => event,
            _ = stop.wait_for(|stop| *stop) => break,
            _ = async { typing_tick.as_mut()?.tick().await; Some(()) }, if typing_tick.is_some() => {
                if let Some(typing) = &typing {
                    socket.typing(&typing.conversation_id);
                }
                continue;
            }
        };
        let Some(event) = event else { break };
        match event {
            Event::Message(message) => {
                let at = Instant::now();
                if let Some(c) = index.get(&message.conversation_id) {
                    track.arrivals.entry(*c).or_default().push((
                        message.seq,
                        id_key(&message.id),
                        at,
                    ));
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
    track.duplicates_dropped = socket.duplicates_dropped();
    track.late_dropped = socket.late_dropped();
    track
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Two users in conversation 0, one socket each; seqs 1 to 3 acknowledged.
    fn acked(start: Instant) -> HashMap<(usize, i64), Ack> {
        (1..=3)
            .map(|seq| {
                let ack = Ack {
                    due: start,
                    measured: true,
                    id: id_key(&format!("m{seq}")),
                };
                ((0, seq), ack)
            })
            .collect()
    }

    fn track(start: Instant, seqs: &[i64]) -> Track {
        let arrivals = seqs
            .iter()
            .map(|seq| (*seq, id_key(&format!("m{seq}")), start))
            .collect();
        Track {
            arrivals: HashMap::from([(0, arrivals)]),
            ..Track::default()
        }
    }

    fn run_check(start: Instant, tracks: Vec<Track>) -> Checked {
        let tracks: Vec<(usize, Track)> = tracks.into_iter().enumerate().collect();
        let members: [&[usize]; 1] = [&[0, 1]];
        let window = (start, start + Duration::from_secs(1));
        check(&acked(start), &members, &tracks, &[], window, None)
    }

    #[test]
    fn everything_once_in_order_passes() {
        let start = Instant::now();
        let checked = run_check(
            start,
            vec![track(start, &[1, 2, 3]), track(start, &[1, 2, 3])],
        );
        assert_eq!(
            (
                checked.lost,
                checked.duplicates,
                checked.reordered,
                checked.mismatched
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(checked.delivered_total, 6);
        assert_eq!(checked.e2e.count(), 6);
        assert!(checked.described.is_empty());
    }

    #[test]
    fn a_missing_delivery_is_lost_and_named() {
        let start = Instant::now();
        let checked = run_check(start, vec![track(start, &[1, 2, 3]), track(start, &[1, 3])]);
        assert_eq!(checked.lost, 1);
        assert!(checked.described[0].contains("socket 1 (user 1) never had seq 2"));
    }

    #[test]
    fn twice_handed_and_out_of_order_are_counted() {
        let start = Instant::now();
        let checked = run_check(
            start,
            vec![track(start, &[1, 2, 2, 3]), track(start, &[2, 1, 3])],
        );
        assert_eq!(checked.duplicates, 1);
        assert_eq!(checked.reordered, 1);
        assert_eq!(checked.lost, 0);
    }

    #[test]
    fn what_the_client_dropped_is_counted_apart() {
        let start = Instant::now();
        let mut late = track(start, &[1, 2, 3]);
        late.late_dropped = 1;
        late.duplicates_dropped = 4;
        let checked = run_check(start, vec![late, track(start, &[1, 2, 3])]);
        assert_eq!((checked.reordered, checked.raw_duplicates), (1, 4));
        assert_eq!(checked.duplicates, 0);
    }

    #[test]
    fn another_message_under_an_acknowledged_seq_is_a_mismatch() {
        let start = Instant::now();
        let mut wrong = track(start, &[1, 2, 3]);
        wrong.arrivals.get_mut(&0).unwrap()[1].1 = id_key("someone else's message");
        let checked = run_check(start, vec![wrong, track(start, &[1, 2, 3])]);
        assert_eq!((checked.mismatched, checked.lost), (1, 0));
    }
}
