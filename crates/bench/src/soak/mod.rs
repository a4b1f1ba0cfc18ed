//! `soak`: a mixed load for a long time while faults come and go, with the checker watching
//! every message.
//!
//! Direct pairs and a few groups send on a fixed schedule (open loop) while other users register,
//! log in, refresh tokens, open conversations with someone who registered a moment ago, read
//! history and type. Every 20-60 s (seeded) one or two parts of the system are broken for a while
//! and healed ([`faults`]). At the end, after the system settled:
//!
//! - every acknowledged message reached every member's socket, once after dedup, in order, with
//!   no gaps and nothing mismatched (the same checker as the other scenarios);
//! - every acknowledged message is in its conversation's history, as acknowledged;
//! - no request was answered `500`;
//! - no service's memory grew past a bound;
//! - presence settles to the truth: everyone online while their socket is open, offline once
//!   it closed.
//!
//! The timeline lists each fault with, per window between two fault events, the sends accepted
//! and refused, end-to-end latency, and the longest time any socket waited for a message it was
//! owed.

pub(crate) mod faults;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use realchat_client::{Client, Error};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{
    load::{self, Ack, Track, Typing, id_key, lock, shell},
    procfs,
    report::{Latency, Report},
    setup,
};
use faults::{Commands, Fault, Rng};

/// What one soak does.
#[derive(Debug, Clone)]
pub(crate) struct Soak {
    pub(crate) url: String,
    pub(crate) seed: u64,
    /// Seconds of load (faults stop `quiet` seconds before the end).
    pub(crate) duration: f64,
    /// Seconds between fault rounds, at least and at most.
    pub(crate) every: (f64, f64),
    /// Messages per second over every conversation.
    pub(crate) rate: f64,
    /// Direct conversations (two users each).
    pub(crate) pairs: usize,
    /// Sizes of the groups.
    pub(crate) groups: Vec<usize>,
    /// One round is a broker outage longer than five minutes.
    pub(crate) long_outage: bool,
    pub(crate) commands: Commands,
    /// Longest a service may grow, in MiB, from the first sample to the last.
    pub(crate) rss_growth_mib: f64,
    /// Longest presence may take to tell the truth, in seconds.
    pub(crate) presence_within: f64,
}

/// Seconds at the end with no faults.
const QUIET: f64 = 20.0;

/// How often each background operation runs, in seconds.
const REGISTER_EVERY: f64 = 2.0;
const REFRESH_EVERY: f64 = 1.0;
const READ_EVERY: f64 = 0.2;
const TYPING_EVERY: Duration = Duration::from_secs(3);

impl Soak {
    /// The faults its seed gives.
    pub(crate) fn schedule(&self) -> Vec<Fault> {
        faults::schedule(
            &mut Rng::new(self.seed),
            self.duration,
            self.every,
            QUIET,
            self.long_outage,
            &self.commands,
        )
    }
}

/// Runs the soak and writes what it found into `report`.
pub(crate) async fn run(soak: &Soak, report: &mut Report) -> anyhow::Result<()> {
    let schedule = soak.schedule();
    eprintln!(
        "soak: seed {} ({} fault events over {} s)",
        soak.seed,
        schedule.len(),
        soak.duration
    );
    report.set("seed", soak.seed);
    report.set("duration_s", soak.duration);
    report.set("offered_rate", soak.rate);

    // Users and conversations: pairs first, then each group's members.
    let run = setup::run_id();
    let group_users: usize = soak.groups.iter().sum();
    let users = soak.pairs * 2 + group_users;
    let clients = setup::users(&soak.url, &run, users).await?;
    let ids = setup::ids(&clients);
    let mut conversations = Vec::new();
    for (pair, id) in setup::pairs(&clients[..soak.pairs * 2], &ids[..soak.pairs * 2])
        .await?
        .into_iter()
        .enumerate()
    {
        conversations.push(Member::conversation(id, vec![pair * 2, pair * 2 + 1]));
    }
    let mut first = soak.pairs * 2;
    for size in &soak.groups {
        let members = first..first + size;
        let id = setup::group(&clients[members.clone()], &ids[members.clone()]).await?;
        conversations.push(Member::conversation(id, members.collect()));
        first += size;
    }
    report.set("users", users);
    report.set("conversations", conversations.len());

    // One socket per user, through the gateway, so a socket can move between replicas.
    let index: Arc<HashMap<String, usize>> = Arc::new(
        conversations
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect(),
    );
    let mut conversations_of: HashMap<usize, Vec<String>> = HashMap::new();
    for conversation in &conversations {
        for member in &conversation.members {
            conversations_of
                .entry(*member)
                .or_default()
                .push(conversation.id.clone());
        }
    }
    let owners: Vec<usize> = (0..users).collect();
    let (sockets, _) = load::connect(&clients, &owners, &[], |user| {
        conversations_of.get(&user).cloned().unwrap_or_default()
    })
    .await?;
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_readers, readers_stopped) = watch::channel(false);
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|(user, socket, _)| {
            // Every fifth user types now and then in their first conversation.
            let typing = (user % 5 == 0)
                .then(|| conversations_of.get(&user)?.first().cloned())
                .flatten()
                .map(|conversation_id| Typing {
                    conversation_id,
                    every: TYPING_EVERY,
                });
            let reader = load::read(
                socket,
                Arc::clone(&index),
                Arc::clone(&delivered),
                readers_stopped.clone(),
                typing,
            );
            (user, tokio::spawn(reader))
        })
        .collect();

    let started = Instant::now() + Duration::from_millis(200);
    let memory = tokio::spawn(sample_memory(started, soak.duration));
    let stop_background = Arc::new(AtomicBool::new(false));
    let background = tokio::spawn(background(
        soak.url.clone(),
        run.clone(),
        clients.clone(),
        conversations.clone(),
        Arc::clone(&stop_background),
    ));
    let timeline = tokio::spawn(apply(schedule.clone(), started));
    let sends = send(&clients, &conversations, soak, started).await;
    stop_background.store(true, Ordering::Relaxed);
    let applied = timeline.await.context("the fault task panicked")?;
    let background = background.await.context("the background task panicked")?;

    // Settle, then drain: every socket of every member has every acknowledged message.
    let expected: u64 = sends
        .acked
        .keys()
        .map(|(c, _)| conversations[*c].members.len() as u64)
        .sum();
    let drain_until = Instant::now() + faults::settle_time(&schedule) + Duration::from_secs(60);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "soak: {} of {expected} deliveries arrived; checking presence",
        delivered.load(Ordering::Relaxed)
    );

    // Presence with every socket open: everyone online.
    let online = presence_settles(&clients, &ids, &conversations, true, soak.presence_within).await;
    let _ = stop_readers.send(true);
    let mut tracks: Vec<(usize, Track)> = Vec::with_capacity(readers.len());
    for (user, reader) in readers {
        tracks.push((user, reader.await.context("a socket reader panicked")?));
    }
    // Every socket closed: everyone offline.
    let offline =
        presence_settles(&clients, &ids, &conversations, false, soak.presence_within).await;
    let memory = memory.await.context("the memory sampler panicked")?;

    // The checker.
    let members: Vec<&[usize]> = conversations.iter().map(|c| c.members.as_slice()).collect();
    let window = (started, started + Duration::from_secs_f64(soak.duration));
    let checked = load::check(&sends.acked, &members, &tracks, &[], window, None);
    let missing_from_history = history_check(&clients, &conversations, &sends.acked).await?;
    let windows = windows(&applied, &sends, &members, &tracks, started, soak.duration);

    write_report(
        report,
        &Found {
            applied: &applied,
            windows: &windows,
            sends: &sends,
            checked: &checked,
            missing_from_history,
            background: &background,
            memory: &memory,
            online,
            offline,
        },
        soak,
    );
    Ok(())
}

/// A conversation under load and its members (indexes into the users).
#[derive(Debug, Clone)]
struct Member {
    id: String,
    members: Vec<usize>,
}

impl Member {
    fn conversation(id: String, members: Vec<usize>) -> Self {
        Self { id, members }
    }
}

/// What the sender saw.
#[derive(Debug, Default)]
struct Sends {
    /// Acknowledged, by (conversation index, seq).
    acked: HashMap<(usize, i64), Ack>,
    /// Every send's due time and whether it was acknowledged.
    outcomes: Vec<(Instant, bool)>,
    /// Sends answered `500`.
    internal_errors: u64,
    send_latency: Latency,
}

/// The open-loop sender: one message every `1 / rate` seconds, round robin over the
/// conversations, each from its members in turn. A send that fails is counted as refused;
/// only acknowledged ones are owed to the sockets.
async fn send(
    clients: &[Client],
    conversations: &[Member],
    soak: &Soak,
    started: Instant,
) -> Sends {
    let total = (soak.duration * soak.rate).round() as u64;
    let sends: Arc<Mutex<Sends>> = Arc::default();
    let mut tasks = Vec::with_capacity(total as usize);
    for k in 0..total {
        let due = started + Duration::from_secs_f64(k as f64 / soak.rate);
        tokio::time::sleep_until(due.into()).await;
        let c = (k as usize) % conversations.len();
        let conversation = &conversations[c];
        let sender =
            conversation.members[(k as usize / conversations.len()) % conversation.members.len()];
        let (client, id, sends) = (
            clients[sender].clone(),
            conversation.id.clone(),
            Arc::clone(&sends),
        );
        tasks.push(tokio::spawn(async move {
            let result = client.send(&id, "soak message").await;
            let mut sends = lock(&sends);
            match result {
                Ok(message) => {
                    sends.send_latency.record(due.elapsed());
                    sends.outcomes.push((due, true));
                    let ack = Ack {
                        due,
                        measured: true,
                        id: id_key(&message.id),
                    };
                    sends.acked.insert((c, message.seq), ack);
                }
                Err(error) => {
                    if is_internal(&error) {
                        sends.internal_errors += 1;
                    }
                    sends.outcomes.push((due, false));
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    std::mem::take(&mut *lock(&sends))
}

/// A `500`: never an acceptable answer, whatever is down.
fn is_internal(error: &Error) -> bool {
    matches!(error, Error::Api { status: 500, .. })
}

/// One fault as it happened: when it was in place and healed, in seconds into the soak, and
/// what went wrong applying or healing it.
#[derive(Debug, Clone)]
struct Applied {
    fault: Fault,
    from: f64,
    to: f64,
    /// The break command failed (the fault was not applied), or the heal command kept failing
    /// (the part did not come back). Either fails the run.
    problem: Option<String>,
}

/// Applies the schedule from `started`: each fault's break command at its time and, once it has
/// been in place for its length, its heal command; several at once where they overlap. A fault
/// that cannot be applied or healed is recorded as such and the soak goes on.
async fn apply(schedule: Vec<Fault>, started: Instant) -> Vec<Applied> {
    let tasks: Vec<_> = schedule
        .into_iter()
        .map(|fault| tokio::spawn(apply_one(fault, started)))
        .collect();
    let mut applied = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(one) = task.await {
            applied.push(one);
        }
    }
    applied.sort_by(|a, b| a.from.total_cmp(&b.from));
    applied
}

async fn apply_one(fault: Fault, started: Instant) -> Applied {
    let now = || started.elapsed().as_secs_f64();
    tokio::time::sleep_until((started + Duration::from_secs_f64(fault.at)).into()).await;
    eprintln!(
        "soak: {:7.1} s  {} ({})",
        now(),
        fault.kind.name(),
        fault.break_command
    );
    if let Err(error) = shell(&fault.break_command).await {
        let at = now();
        eprintln!(
            "soak: {at:7.1} s  could not apply {}: {error:#}",
            fault.kind.name()
        );
        return Applied {
            fault,
            from: at,
            to: at,
            problem: Some(format!("could not apply it: {error:#}")),
        };
    }
    // The fault counts from when its command finished: that is when it is in place.
    let from = now();
    let mut problem = None;
    if !fault.heal_command.is_empty() {
        tokio::time::sleep(Duration::from_secs_f64(fault.length)).await;
        eprintln!(
            "soak: {:7.1} s  healing {} ({})",
            now(),
            fault.kind.name(),
            fault.heal_command
        );
        // Starting can fail while another part is still broken (PostgreSQL restarting under a
        // service's migrations): try a few times.
        for attempt in 1..=5 {
            match shell(&fault.heal_command).await {
                Ok(()) => {
                    problem = None;
                    break;
                }
                Err(error) => {
                    problem = Some(format!("could not heal it ({attempt} tries): {error:#}"))
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    Applied {
        to: now(),
        fault,
        from,
        problem,
    }
}

/// What the other users did, counted by operation: (ok, refused, answered 500).
#[derive(Debug, Default)]
struct Background {
    counts: BTreeMap<&'static str, (u64, u64, u64)>,
}

impl Background {
    fn count<T>(&mut self, operation: &'static str, result: &Result<T, Error>) {
        let entry = self.counts.entry(operation).or_default();
        match result {
            Ok(_) => entry.0 += 1,
            Err(error) if is_internal(error) => entry.2 += 1,
            Err(_) => entry.1 += 1,
        }
    }

    fn internal_errors(&self) -> u64 {
        self.counts.values().map(|c| c.2).sum()
    }
}

/// Registrations (each followed by a login and a conversation opened with the new user at once),
/// token refreshes and history reads, on their own schedules, until told to stop.
async fn background(
    url: String,
    run: String,
    clients: Vec<Client>,
    conversations: Vec<Member>,
    stop: Arc<AtomicBool>,
) -> Background {
    let counts = Arc::new(Mutex::new(Background::default()));
    let registrations = {
        let (counts, stop, clients) = (Arc::clone(&counts), Arc::clone(&stop), clients.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let newcomer = Client::new(&url);
                let name = format!("s{run}_{n}");
                let registered = newcomer.register(&name, "soak password").await;
                lock(&counts).count("register", &registered);
                if let Ok(user) = registered {
                    let logged_in = newcomer.login(&name, "soak password").await;
                    lock(&counts).count("login", &logged_in);
                    // Someone opens a conversation with the newcomer the moment they exist.
                    let opener = &clients[n % clients.len()];
                    let opened = opener.open_direct(&user.user_id).await;
                    lock(&counts).count("open_direct", &opened);
                }
                tokio::time::sleep(Duration::from_secs_f64(REGISTER_EVERY)).await;
            }
        })
    };
    let refreshes = {
        let (counts, stop, clients) = (Arc::clone(&counts), Arc::clone(&stop), clients.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let refreshed = clients[n % clients.len()].refresh().await;
                lock(&counts).count("refresh", &refreshed);
                tokio::time::sleep(Duration::from_secs_f64(REFRESH_EVERY)).await;
            }
        })
    };
    let reads = {
        let (counts, stop) = (Arc::clone(&counts), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // A member reads the newest page, as a client opening the conversation does.
                let conversation = &conversations[n % conversations.len()];
                let reader = &clients[conversation.members[n % conversation.members.len()]];
                let read = reader.latest(&conversation.id, 20).await;
                lock(&counts).count("read", &read);
                tokio::time::sleep(Duration::from_secs_f64(READ_EVERY)).await;
            }
        })
    };
    for task in [registrations, refreshes, reads] {
        let _ = task.await;
    }
    std::mem::take(&mut *lock(&counts))
}

/// RSS of each service process, sampled every 5 s: (first, peak, last) per process.
type Memory = BTreeMap<String, (u64, u64, u64)>;

async fn sample_memory(started: Instant, duration: f64) -> Memory {
    let mut memory = Memory::new();
    let end = started + Duration::from_secs_f64(duration);
    while Instant::now() < end {
        for process in procfs::services() {
            let entry = memory.entry(process.name).or_insert((
                process.rss_bytes,
                process.rss_bytes,
                process.rss_bytes,
            ));
            entry.1 = entry.1.max(process.rss_bytes);
            entry.2 = process.rss_bytes;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    memory
}

/// Seconds until `GET /v1/presence` says every user is `online` (or every user is not), or
/// `None` if it did not within `within` seconds. Presence is only for contacts, so each
/// conversation's first member asks about its members; every user is in one.
async fn presence_settles(
    clients: &[Client],
    ids: &[String],
    conversations: &[Member],
    online: bool,
    within: f64,
) -> Option<f64> {
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < within {
        let mut all = true;
        'asking: for conversation in conversations {
            let asker = clients.get(*conversation.members.first()?)?;
            let members: Vec<&str> = conversation
                .members
                .iter()
                .filter_map(|&member| ids.get(member).map(String::as_str))
                .collect();
            for chunk in members.chunks(100) {
                match asker.presence(chunk).await {
                    Ok(presence) => {
                        all &= presence.len() == chunk.len()
                            && presence.iter().all(|p| (p.status == "online") == online);
                    }
                    Err(_) => all = false,
                }
                if !all {
                    break 'asking;
                }
            }
        }
        if all {
            return Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Acknowledged messages missing from their conversation's history, or different there.
async fn history_check(
    clients: &[Client],
    conversations: &[Member],
    acked: &HashMap<(usize, i64), Ack>,
) -> anyhow::Result<u64> {
    let mut missing = 0;
    for (c, conversation) in conversations.iter().enumerate() {
        let reader = &clients[conversation.members[0]];
        let mut stored: HashMap<i64, u64> = HashMap::new();
        let mut after = 0;
        loop {
            let page = reader
                .history_after(&conversation.id, after, 200)
                .await
                .with_context(|| format!("reading the history of conversation {c}"))?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            stored.extend(page.iter().map(|m| (m.seq, id_key(&m.id))));
        }
        missing += acked
            .iter()
            .filter(|((ack_c, seq), ack)| *ack_c == c && stored.get(seq) != Some(&ack.id))
            .count() as u64;
    }
    Ok(missing)
}

/// One stretch of the soak between two fault events.
#[derive(Debug)]
struct Window {
    from: f64,
    to: f64,
    faults: Vec<String>,
    accepted: u64,
    refused: u64,
    e2e: Latency,
    /// The longest any member socket waited for a message due in the window; `None` when one
    /// never came.
    longest_wait: Option<Duration>,
}

fn windows(
    applied: &[Applied],
    sends: &Sends,
    members: &[&[usize]],
    tracks: &[(usize, Track)],
    started: Instant,
    duration: f64,
) -> Vec<Window> {
    let mut edges: Vec<f64> = vec![0.0, duration];
    for a in applied {
        edges.push(a.from.clamp(0.0, duration));
        edges.push(a.to.clamp(0.0, duration));
    }
    edges.sort_by(f64::total_cmp);
    edges.dedup_by(|a, b| (*a - *b).abs() < 0.5);
    let mut windows: Vec<Window> = edges
        .windows(2)
        .map(|w| Window {
            from: w[0],
            to: w[1],
            faults: applied
                .iter()
                .filter(|a| a.from < w[1] && a.to.max(a.from + 0.5) > w[0])
                .map(|a| format!("{} ({})", a.fault.kind.name(), a.fault.target))
                .collect(),
            accepted: 0,
            refused: 0,
            e2e: Latency::default(),
            longest_wait: Some(Duration::ZERO),
        })
        .collect();
    let window_of = |due: Instant| {
        let seconds = due.saturating_duration_since(started).as_secs_f64();
        edges
            .windows(2)
            .position(|w| seconds >= w[0] && seconds < w[1])
    };
    for (due, acked) in &sends.outcomes {
        if let Some(w) = window_of(*due) {
            if *acked {
                windows[w].accepted += 1;
            } else {
                windows[w].refused += 1;
            }
        }
    }
    // The first arrival of each (conversation, seq) on each socket.
    let arrivals: Vec<HashMap<(usize, i64), Instant>> = tracks
        .iter()
        .map(|(_, track)| {
            let mut first = HashMap::new();
            for (c, list) in &track.arrivals {
                for (seq, _, at) in list {
                    first.entry((*c, *seq)).or_insert(*at);
                }
            }
            first
        })
        .collect();
    let mut sockets_of: HashMap<usize, Vec<usize>> = HashMap::new();
    for (socket, (user, _)) in tracks.iter().enumerate() {
        sockets_of.entry(*user).or_default().push(socket);
    }
    for ((c, seq), ack) in &sends.acked {
        let Some(w) = window_of(ack.due) else {
            continue;
        };
        let window = &mut windows[w];
        for member in members[*c] {
            for socket in sockets_of.get(member).into_iter().flatten() {
                match arrivals[*socket].get(&(*c, *seq)) {
                    Some(at) => {
                        let wait = at.saturating_duration_since(ack.due);
                        window.e2e.record(wait);
                        window.longest_wait = window.longest_wait.map(|w| w.max(wait));
                    }
                    None => window.longest_wait = None,
                }
            }
        }
    }
    windows
}

/// Everything the soak found, for the report.
struct Found<'a> {
    applied: &'a [Applied],
    windows: &'a [Window],
    sends: &'a Sends,
    checked: &'a load::Checked,
    missing_from_history: u64,
    background: &'a Background,
    memory: &'a Memory,
    online: Option<f64>,
    offline: Option<f64>,
}

fn write_report(report: &mut Report, found: &Found<'_>, soak: &Soak) {
    let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1000.0).round());
    let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} ms"));
    report.say(format!(
        "soak        seed {}, {} s, {} msg/s over {} pairs and groups of {:?}",
        soak.seed, soak.duration, soak.rate, soak.pairs, soak.groups
    ));
    report.say("timeline    fault, applied at, healed at (seconds into the run)".to_owned());
    let mut timeline = Vec::new();
    for a in found.applied {
        report.say(format!(
            "            {:>7.1} {:>7.1}  {} ({}){}",
            a.from,
            a.to,
            a.fault.kind.name(),
            a.fault.target,
            a.problem
                .as_ref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        ));
        timeline.push(json!({
            "fault": a.fault.kind.name(),
            "target": a.fault.target,
            "start_s": (a.from * 10.0).round() / 10.0,
            "end_s": (a.to * 10.0).round() / 10.0,
            "problem": a.problem,
        }));
        // A part that did not come back is the system's failure; a fault that could not be
        // applied means the soak did not do what it says: both fail the run.
        if let Some(problem) = &a.problem {
            report.fail(format!(
                "{} ({}): {problem}",
                a.fault.kind.name(),
                a.fault.target
            ));
        }
    }
    report.set("timeline", timeline);
    report.say(
        "windows     from     to  accepted refused   e2e p50     p99  longest wait  faults"
            .to_owned(),
    );
    let mut windows = Vec::new();
    for w in found.windows {
        let longest = ms(w.longest_wait);
        report.say(format!(
            "            {:>5.0} {:>6.0}  {:>8} {:>7} {:>9} {:>7} {:>13}  {}",
            w.from,
            w.to,
            w.accepted,
            w.refused,
            show(w.e2e.ms(50.0)),
            show(w.e2e.ms(99.0)),
            longest.map_or("never came".to_owned(), |v| format!("{v:.0} ms")),
            if w.faults.is_empty() {
                "-".to_owned()
            } else {
                w.faults.join(", ")
            }
        ));
        windows.push(json!({
            "from_s": (w.from * 10.0).round() / 10.0,
            "to_s": (w.to * 10.0).round() / 10.0,
            "faults": w.faults,
            "accepted": w.accepted,
            "refused": w.refused,
            "e2e_p50_ms": w.e2e.ms(50.0),
            "e2e_p99_ms": w.e2e.ms(99.0),
            "longest_wait_ms": longest,
        }));
    }
    report.set("windows", windows);

    let sends = found.sends;
    let accepted = sends.outcomes.iter().filter(|(_, ok)| *ok).count();
    let refused = sends.outcomes.len() - accepted;
    report.set("sent", sends.outcomes.len());
    report.set("acked", accepted);
    report.set("refused", refused);
    sends.send_latency.write("send", report);
    found.checked.e2e.write("e2e", report);
    let c = found.checked;
    for (key, value) in [
        ("delivered", c.delivered_total),
        ("lost", c.lost),
        ("duplicates", c.duplicates),
        ("duplicates_raw", c.raw_duplicates),
        ("reordered", c.reordered),
        ("gaps", c.gaps),
        ("mismatched", c.mismatched),
        ("disconnects", c.disconnects),
        ("missing_from_history", found.missing_from_history),
    ] {
        report.set(key, value);
    }
    report.say(format!(
        "sends       {} sent, {accepted} acknowledged, {refused} refused;  {}",
        sends.outcomes.len(),
        sends.send_latency.line()
    ));
    report.say(format!(
        "end to end  {}  ({} deliveries)",
        c.e2e.line(),
        c.delivered_total
    ));
    report.say(format!(
        "checked     lost {}  duplicates {} (server sent {} again)  reordered {}  gaps {}  mismatched {}  missing from history {}  reconnects {}",
        c.lost, c.duplicates, c.raw_duplicates, c.reordered, c.gaps, c.mismatched,
        found.missing_from_history, c.disconnects
    ));
    c.judge(report);
    if found.missing_from_history > 0 {
        report.fail(format!(
            "{} acknowledged messages are missing from history",
            found.missing_from_history
        ));
    }

    let mut operations = serde_json::Map::new();
    let mut line = String::from("others     ");
    for (operation, (ok, refused, internal)) in &found.background.counts {
        operations.insert(
            (*operation).to_owned(),
            json!({"ok": ok, "refused": refused, "internal_errors": internal}),
        );
        line.push_str(&format!(" {operation} {ok} ok/{refused} refused"));
    }
    report.set("operations", Value::Object(operations));
    report.say(line);
    let internal = sends.internal_errors + found.background.internal_errors();
    report.set("internal_errors", internal);
    if internal > 0 {
        report.fail(format!("{internal} requests were answered 500"));
    }

    let mut memory = serde_json::Map::new();
    let mut line = String::from("memory      RSS first/peak/last MiB:");
    let mib = |bytes: u64| (bytes as f64 / 1048576.0 * 10.0).round() / 10.0;
    for (name, (first, peak, last)) in found.memory {
        memory.insert(
            name.clone(),
            json!({"first_mib": mib(*first), "peak_mib": mib(*peak), "last_mib": mib(*last)}),
        );
        line.push_str(&format!(
            "  {name} {}/{}/{}",
            mib(*first),
            mib(*peak),
            mib(*last)
        ));
        if mib(*last) - mib(*first) > soak.rss_growth_mib {
            report.fail(format!(
                "{name} grew from {} MiB to {} MiB (bound: {} MiB)",
                mib(*first),
                mib(*last),
                soak.rss_growth_mib
            ));
        }
    }
    report.set("rss", Value::Object(memory));
    report.say(line);

    report.set("presence_online_s", found.online);
    report.set("presence_offline_s", found.offline);
    report.say(format!(
        "presence    everyone online {} after the faults; everyone offline {} after their sockets closed",
        found.online.map_or("never".to_owned(), |s| format!("{s:.1} s")),
        found.offline.map_or("never".to_owned(), |s| format!("{s:.1} s")),
    ));
    if found.online.is_none() || found.offline.is_none() {
        report.fail(format!(
            "presence did not settle to the truth within {} s",
            soak.presence_within
        ));
    }
}
