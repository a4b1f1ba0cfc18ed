//! `bench`: load and proof. Offers a fixed rate of sends (open loop: a send starts when it is due,
//! whatever the earlier ones are doing, so a stall shows up in the latencies instead of lowering
//! the rate), measures how long each message takes to reach every member's socket, and at the end
//! checks that every acknowledged message reached every member's socket: none lost, none
//! duplicated, none out of order. Any violation makes the run fail (exit status 1).
//!
//! Scenarios:
//! - `direct`: many 1:1 conversations, every member with a socket.
//! - `group-fanout`: one group (1,000 members by default), or several apart (`--groups`), every
//!   member with a socket.
//! - `connections`: hold many idle sockets on one delivery replica; memory per socket.
//! - `outage`: `direct` load while the broker is stopped for a while; the backlog's drain time.
//! - `soak`: a mixed load for a long time while faults come and go at random (seeded), checked
//!   throughout (see [`soak`]).
//!
//! Each run also measures the limits its result is compared with (see [`limits`]).
//!
//! ```sh
//! cargo run --release -p bench -- direct --rate 1000 --duration 20
//! cargo run --release -p bench -- group-fanout --json
//! ```

mod limits;
mod load;
mod procfs;
mod report;
mod setup;
mod soak;

use std::{process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use load::{Conversation, Load, Outage};
use report::Report;

/// Load generator and correctness checker.
#[derive(Debug, Parser)]
#[command(name = "bench", about)]
struct Cli {
    /// What to run.
    scenario: Scenario,
    /// The server's public URL.
    #[arg(long, env = "REALCHAT_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Offered messages per second [default: 100; 200 for `outage`].
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of measured load, after the warm-up [default: 10; for `outage`, the outage and
    /// 10 s on either side of it].
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of unmeasured load first.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Users [default: 20 for `direct` and `outage` (pairs), the group size for `group-fanout`,
    /// one per 8 sockets for `connections`, within delivery's default cap of 10 sockets a user].
    #[arg(long)]
    users: Option<usize>,
    /// Members of each `group-fanout` group (at most 1,000).
    #[arg(long, default_value_t = 1000)]
    group_size: usize,
    /// Groups `group-fanout` sends to, in turn, each with its own members.
    #[arg(long, default_value_t = 1)]
    groups: usize,
    /// Sockets each user holds (each must get every message).
    #[arg(long, default_value_t = 1)]
    sockets_per_user: usize,
    /// Connect sockets straight to these delivery endpoints (`ws://host:port/v1/ws`,
    /// comma-separated, round robin), as a load balancer would, instead of through the gateway.
    #[arg(long, value_delimiter = ',')]
    ws_url: Vec<String>,
    /// Sockets `connections` holds.
    #[arg(long, default_value_t = 10_000)]
    sockets: usize,
    /// Seconds `connections` holds its sockets idle.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// Seconds the broker stays down in `outage`.
    #[arg(long, default_value_t = 60.0)]
    outage: f64,
    /// Seconds into the measured load the outage starts.
    #[arg(long, default_value_t = 10.0)]
    outage_after: f64,
    /// Shell command that stops the broker.
    #[arg(long, default_value = "cargo xtask stop kafka")]
    stop_command: String,
    /// Shell command that starts the broker again (and returns once it is up).
    #[arg(long, default_value = "cargo xtask start kafka")]
    start_command: String,
    /// Longest wait for the last deliveries after the last send, in seconds [default: 30; 120
    /// for `outage`].
    #[arg(long)]
    drain: Option<f64>,
    /// Skip measuring the limits (pgbench, bare fan-out).
    #[arg(long)]
    no_limits: bool,
    /// Seconds pgbench runs for the database limit.
    #[arg(long, default_value_t = 10)]
    limit_seconds: u32,
    /// The PostgreSQL server (no database) pgbench measures the database limit on.
    #[arg(
        long,
        env = "REALCHAT_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    postgres_url: String,
    /// `soak`: the seed of its fault schedule [default: from the clock; printed either way].
    #[arg(long)]
    seed: Option<u64>,
    /// `soak`: seconds between fault rounds, at least and at most (`LOW,HIGH`).
    #[arg(long, value_delimiter = ',', default_values_t = [20.0, 60.0])]
    fault_every: Vec<f64>,
    /// `soak`: direct conversations.
    #[arg(long, default_value_t = 20)]
    pairs: usize,
    /// `soak`: the sizes of its groups (2 to 1,000 members each).
    #[arg(long, value_delimiter = ',', default_values_t = [50, 200])]
    group_sizes: Vec<usize>,
    /// `soak`: one fault round is a broker outage longer than five minutes (librdkafka's default
    /// message timeout).
    #[arg(long)]
    long_outage: bool,
    /// `soak`: the command that manages the topology (`<it> stop kafka`, `start`, `pause`, ...).
    #[arg(long, default_value = "cargo xtask")]
    xtask: String,
    /// `soak`: the command that restarts PostgreSQL.
    #[arg(
        long,
        default_value = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -n 1) main restart"
    )]
    postgres_restart_command: String,
    /// `soak`: delivery replicas the topology runs (`delivery-1..N`), one of which faults kill.
    #[arg(long, default_value_t = 2)]
    delivery_replicas: usize,
    /// `soak`: messaging replicas the topology runs (`messaging-1..N`).
    #[arg(long, default_value_t = 2)]
    messaging_replicas: usize,
    /// `soak`: print the fault schedule the seed gives, and exit.
    #[arg(long)]
    dry_run: bool,
    /// `soak`: most a service's RSS may grow over the run, in MiB.
    #[arg(long, default_value_t = 300.0)]
    rss_growth_mib: f64,
    /// `soak`: longest presence may take to tell the truth at the end, in seconds.
    #[arg(long, default_value_t = 90.0)]
    presence_within: f64,
    /// Print one JSON object at the end instead of lines for people.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Many 1:1 conversations, every member with a socket.
    Direct,
    /// One big group, every member with a socket.
    GroupFanout,
    /// Many idle sockets on one delivery replica: memory per socket.
    Connections,
    /// Direct load through a broker outage: nothing lost, and how fast the backlog drains.
    Outage,
    /// A mixed load while random faults come and go: nothing lost, ever.
    Soak,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::GroupFanout => "group-fanout",
            Self::Connections => "connections",
            Self::Outage => "outage",
            Self::Soak => "soak",
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    if cli.scenario == Scenario::Soak && cli.dry_run {
        return match soak_dry_run(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("bench: {error:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli).await {
        Ok(report) => {
            let passed = report.violations.is_empty();
            report.print(json);
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Report> {
    let mut report = Report::new(cli.scenario.name());
    report.set("url", cli.url.clone());
    match cli.scenario {
        Scenario::Direct | Scenario::Outage => direct(&cli, &mut report).await?,
        Scenario::GroupFanout => group_fanout(&cli, &mut report).await?,
        Scenario::Connections => connections(&cli, &mut report).await?,
        // The soak samples memory throughout and reports it itself.
        Scenario::Soak => return soak(&cli, &mut report).await.map(|()| report),
    }
    memory(&mut report);
    Ok(report)
}

/// `direct`, and `outage` (the same load with the broker stopped part of the time).
async fn direct(cli: &Cli, report: &mut Report) -> anyhow::Result<()> {
    let outage = (cli.scenario == Scenario::Outage).then(|| Outage {
        after: cli.outage_after,
        length: cli.outage,
        stop: cli.stop_command.clone(),
        start: cli.start_command.clone(),
    });
    let rate = cli
        .rate
        .unwrap_or(if outage.is_some() { 200.0 } else { 100.0 });
    let duration = cli.duration.unwrap_or(match &outage {
        Some(outage) => outage.after + outage.length + 10.0,
        None => 10.0,
    });
    let limit = database_limit(cli, report)?;
    let users = cli.users.unwrap_or(20);
    let run = setup::run_id();
    let clients = setup::users(&cli.url, &run, users).await?;
    let ids = setup::ids(&clients);
    let conversations = setup::pairs(&clients, &ids)
        .await?
        .into_iter()
        .enumerate()
        .map(|(pair, id)| Conversation {
            id,
            members: vec![pair * 2, pair * 2 + 1],
            senders: vec![pair * 2, pair * 2 + 1],
        })
        .collect();
    report.set("users", users);
    let load = Load {
        conversations,
        rate,
        warmup: cli.warmup,
        duration,
        drain: cli
            .drain
            .unwrap_or(if outage.is_some() { 120.0 } else { 30.0 }),
        sockets_per_user: cli.sockets_per_user,
        ws_urls: cli.ws_url.clone(),
        outage: outage.clone(),
    };
    let outcome = load::run(&clients, &load, report).await?;
    if let Some(limit) = limit {
        let achieved = report
            .get("acked_per_s")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        report.set("acked_per_s_to_limit", ratio(achieved, limit));
        report.say(format!(
            "limit       one send's SQL under pgbench: {limit:.0} tx/s; this run acknowledged {achieved:.0} msg/s ({:.2} of it)",
            achieved / limit
        ));
    }
    if let (Some(outage), Some(back)) = (outage, outcome.broker_back) {
        let drain = outcome
            .backlog_delivered
            .map(|at| at.saturating_duration_since(back).as_secs_f64());
        report.set("outage_s", outage.length);
        report.set(
            "backlog_drain_s",
            drain.map(|d| (d * 1000.0).round() / 1000.0),
        );
        report.say(format!(
            "outage      broker down {} s from {} s into the load; the backlog was delivered {} after it came back",
            outage.length,
            outage.after,
            drain.map_or("never".to_owned(), |d| format!("{d:.2} s"))
        ));
    }
    Ok(())
}

/// `group-fanout`: one group (or `--groups` of them, with members of their own), every member's
/// socket gets every message of its group.
async fn group_fanout(cli: &Cli, report: &mut Report) -> anyhow::Result<()> {
    let size = cli.users.unwrap_or(cli.group_size);
    if !(2..=1000).contains(&size) {
        bail!("a group has 2 to 1,000 members");
    }
    let groups = cli.groups;
    if groups == 0 {
        bail!("--groups must be at least 1");
    }
    let rate = cli.rate.unwrap_or(100.0);
    let limit = if cli.no_limits {
        None
    } else {
        eprintln!("measuring the bare fan-out limit with {size} sockets");
        let messages = (200_000 / size as u64).clamp(200, 5_000);
        // One group's worth of sockets: a message goes to one group at a time.
        let limit = limits::bare_fanout(size * cli.sockets_per_user, messages).await?;
        report.set("limit_bare_fanout_per_s", limit.round());
        Some(limit)
    };
    let run = setup::run_id();
    let clients = setup::users(&cli.url, &run, size * groups).await?;
    let ids = setup::ids(&clients);
    let mut conversations = Vec::with_capacity(groups);
    for g in 0..groups {
        let members = g * size..(g + 1) * size;
        let id = setup::group(&clients[members.clone()], &ids[members.clone()]).await?;
        conversations.push(Conversation {
            id,
            members: members.clone().collect(),
            senders: members.collect(),
        });
    }
    report.set("users", size * groups);
    report.set("group_size", size);
    report.set("groups", groups);
    let load = Load {
        conversations,
        rate,
        warmup: cli.warmup,
        duration: cli.duration.unwrap_or(10.0),
        drain: cli.drain.unwrap_or(30.0),
        sockets_per_user: cli.sockets_per_user,
        ws_urls: cli.ws_url.clone(),
        outage: None,
    };
    load::run(&clients, &load, report).await?;
    if let Some(limit) = limit {
        let achieved = report
            .get("delivered_per_s")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        report.set("delivered_per_s_to_limit", ratio(achieved, limit));
        report.say(format!(
            "limit       a bare fan-out server here: {limit:.0} deliveries/s; this run {achieved:.0}/s ({:.2} of it)",
            achieved / limit
        ));
    }
    Ok(())
}

/// `connections`: idle sockets on one delivery replica, and what each costs it.
async fn connections(cli: &Cli, report: &mut Report) -> anyhow::Result<()> {
    let sockets = cli.sockets;
    let users = cli
        .users
        .unwrap_or(sockets.div_ceil(8))
        .clamp(1, sockets.max(1));
    let Some(ws_url) = cli.ws_url.first().cloned() else {
        bail!(
            "`connections` measures one delivery replica: give its endpoint with --ws-url ws://host:port/v1/ws"
        );
    };
    let port = ws_url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|authority| authority.rsplit(':').next())
        .and_then(|port| port.parse::<u16>().ok())
        .context("--ws-url needs an explicit port")?;
    let pid = procfs::listening_on(port);
    let run = setup::run_id();
    let clients = setup::users(&cli.url, &run, users).await?;
    let owners: Vec<usize> = (0..sockets).map(|i| i % users).collect();
    let before = pid.and_then(procfs::memory);
    let (connected, connect_rate) =
        load::connect(&clients, &owners, std::slice::from_ref(&ws_url), |_| {
            Vec::new()
        })
        .await?;
    eprintln!(
        "{} sockets connected; holding them {} s",
        connected.len(),
        cli.hold
    );
    tokio::time::sleep(Duration::from_secs_f64(cli.hold)).await;
    let after = pid.and_then(procfs::memory);
    // Every socket must still be the one it connected: no reconnects while idle.
    let mut disconnects = 0u64;
    for (_, mut socket, _) in connected {
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(1), socket.next()).await
        {
            if let realchat_client::Event::Disconnected { .. } = event {
                disconnects += 1;
            }
        }
    }
    report.set("users", users);
    report.set("sockets", sockets);
    report.set("connect_per_s", connect_rate.round());
    report.set("hold_s", cli.hold);
    // The keys every scenario reports: nothing is sent while the sockets are held.
    report.set("offered_rate", 0);
    report.set("duration_s", cli.hold);
    for key in [
        "sent",
        "acked",
        "delivered_per_s",
        "lost",
        "duplicates",
        "reordered",
        "gaps",
    ] {
        report.set(key, 0);
    }
    for key in ["e2e_p50_ms", "e2e_p99_ms", "e2e_max_ms"] {
        report.set(key, serde_json::Value::Null);
    }
    report.set("disconnects", disconnects);
    report.say(format!(
        "connections {sockets} sockets of {users} users to {ws_url}, connected at {connect_rate:.0}/s, held {} s, {disconnects} dropped",
        cli.hold
    ));
    match (before, after) {
        (Some((before, _)), Some((after, _))) => {
            let per_socket = after.saturating_sub(before) as f64 / sockets.max(1) as f64;
            report.set("replica_rss_before_bytes", before);
            report.set("replica_rss_after_bytes", after);
            report.set("bytes_per_socket", per_socket.round());
            report.say(format!(
                "memory      the replica went from {:.1} MiB to {:.1} MiB: {:.1} KiB per socket",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                per_socket / 1024.0
            ));
        }
        _ => {
            report.set("bytes_per_socket", serde_json::Value::Null);
            report.fail(format!(
                "cannot read the memory of the process listening on port {port} (is it on this machine?)"
            ));
        }
    }
    if disconnects > 0 {
        report.fail(format!("{disconnects} idle sockets were dropped"));
    }
    Ok(())
}

/// `soak`: faults at random while the checker watches.
async fn soak(cli: &Cli, report: &mut Report) -> anyhow::Result<()> {
    soak::run(&soak_plan(cli)?, report).await
}

/// `soak --dry-run`: the fault schedule the seed gives, one line each.
fn soak_dry_run(cli: &Cli) -> anyhow::Result<()> {
    for fault in soak_plan(cli)?.schedule() {
        println!(
            "{:7.1} {:7.1}  {} ({})",
            fault.at,
            fault.until(),
            fault.kind.name(),
            fault.break_command
        );
    }
    Ok(())
}

/// The soak the options describe.
fn soak_plan(cli: &Cli) -> anyhow::Result<soak::Soak> {
    if cli
        .group_sizes
        .iter()
        .any(|size| !(2..=1000).contains(size))
    {
        bail!("a group has 2 to 1,000 members");
    }
    if cli.pairs == 0 && cli.group_sizes.is_empty() {
        bail!("a soak needs --pairs or --group-sizes");
    }
    let [low, high] = cli.fault_every[..] else {
        bail!("--fault-every takes two numbers, LOW,HIGH");
    };
    if !(1.0..=high).contains(&low) {
        bail!("--fault-every needs 1 <= low <= high");
    }
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    Ok(soak::Soak {
        url: cli.url.clone(),
        seed,
        duration: cli.duration.unwrap_or(600.0),
        every: (low, high),
        rate: cli.rate.unwrap_or(40.0),
        pairs: cli.pairs,
        groups: cli.group_sizes.clone(),
        long_outage: cli.long_outage,
        commands: soak::faults::Commands {
            xtask: cli.xtask.clone(),
            postgres_restart: cli.postgres_restart_command.clone(),
            delivery_replicas: cli.delivery_replicas,
            messaging_replicas: cli.messaging_replicas,
        },
        rss_growth_mib: cli.rss_growth_mib,
        presence_within: cli.presence_within,
    })
}

/// The pgbench limit, unless asked not to.
fn database_limit(cli: &Cli, report: &mut Report) -> anyhow::Result<Option<f64>> {
    if cli.no_limits {
        return Ok(None);
    }
    eprintln!(
        "measuring the database limit: one send's SQL under pgbench for {} s",
        cli.limit_seconds
    );
    let tps = limits::pgbench_sends(&cli.postgres_url, cli.limit_seconds)?;
    report.set("limit_pgbench_tps", tps.round());
    Ok(Some(tps))
}

fn ratio(achieved: f64, limit: f64) -> f64 {
    (achieved / limit * 1000.0).round() / 1000.0
}

/// The memory of every service process on this machine, into the report.
fn memory(report: &mut Report) {
    let processes = procfs::services();
    if processes.is_empty() {
        return;
    }
    let mut rss = serde_json::Map::new();
    let mut line = String::from("memory      RSS (peak):");
    for process in &processes {
        let mib = |bytes: u64| (bytes as f64 / 1048576.0 * 10.0).round() / 10.0;
        rss.insert(
            process.name.clone(),
            serde_json::json!({"rss_mib": mib(process.rss_bytes), "peak_rss_mib": mib(process.peak_rss_bytes)}),
        );
        line.push_str(&format!(
            "  {} {} MiB ({})",
            process.name,
            mib(process.rss_bytes),
            mib(process.peak_rss_bytes)
        ));
    }
    report.set("rss", serde_json::Value::Object(rss));
    report.say(line);
}
