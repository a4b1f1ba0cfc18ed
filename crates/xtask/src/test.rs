//! `cargo xtask test`: formatting, lints, then the workspace tests against
//! real infrastructure, leaving the machine as it was found.

use std::process::{Command, ExitCode, ExitStatus};

use anyhow::{Context as _, Result};

use crate::{
    config::{self, Settings},
    lifecycle::{self, Ensured, System},
    topology::{Component, ReplicaCounts, Topology},
    ui::{self, step},
};

/// Runs the stages in order, stopping at the first failure, and returns the
/// exit code of the failing stage (or of `cargo test`).
pub(crate) fn run(settings: Settings, cargo_test_args: &[String]) -> Result<ExitCode> {
    let root = settings.root.clone();

    step!("[1/6] Formatting: cargo fmt --all --check");
    let status = cargo(&root, &["fmt", "--all", "--check"]).status()?;
    if !status.success() {
        step!("Formatting differs; `cargo fmt --all` fixes it");
        return Ok(exit_code(status));
    }

    step!("[2/6] Lints: cargo clippy --workspace --all-targets -- -D warnings");
    let status = cargo(
        &root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )
    .status()?;
    if !status.success() {
        return Ok(exit_code(status));
    }

    step!(
        "[3/6] Packaging: README, Nix, compose, Terraform and dashboards, checked against what the binaries read"
    );
    let status = packaging_checks(&settings)?;
    if !status.success() {
        return Ok(exit_code(status));
    }

    step!("[4/6] Infrastructure: PostgreSQL, a broker of the test run's own, the topology's Redis");
    lifecycle::check_postgres(&settings)?;
    warn_if_postgres_is_nearly_full(&settings);
    let system = System::load(settings)?;
    // Declared before anything starts, so an early return stops what did start.
    let mut started = StartedByUs::new(&system);
    if system.ensure_running(Component::Redis)? == Ensured::Started {
        started.components.push(Component::Redis);
    }

    let settings = system.settings();
    // Fault tests start brokers of their own to stop and start; they use the same binary.
    let tansu = crate::broker::ensure_installed(settings)?;
    // Every test makes topics of its own and the broker cannot delete them, so a broker that
    // lived through many runs gets slow: each run gets a fresh one, removed afterwards.
    let broker = TestBroker::start(&tansu, &settings.data_dir)?;
    let mut command_line = vec!["test", "--workspace"];
    command_line.extend(cargo_test_args.iter().map(String::as_str));
    step!("[5/6] Tests: cargo {}", command_line.join(" "));
    let status = cargo(&root, &command_line)
        .env("REALCHAT_TEST_POSTGRES_URL", settings.postgres.as_str())
        .env("REALCHAT_TEST_KAFKA_BROKERS", &broker.address)
        .env("REALCHAT_TEST_REDIS_URL", settings.redis_url())
        .env("REALCHAT_TEST_TANSU", &tansu)
        .status()
        .context("cannot run cargo test")?;
    if !status.success() {
        ui::warning!("cargo test failed ({status})");
    }
    drop(broker);
    drop(started);
    if !status.success() {
        return Ok(exit_code(status));
    }

    step!(
        "[6/6] Soak: {} s of mixed load while faults come and go (seed {SOAK_SEED}), checked throughout; then the dashboards and the API contract against its topology",
        SOAK_SECONDS
    );
    let status = soak(settings)?;
    if !status.success() {
        ui::warning!(
            "the soak or a check against its topology failed ({status}); its topology's logs are in {}",
            settings.display_path(&settings.data_dir.join("soak/logs"))
        );
    }
    Ok(exit_code(status))
}

/// How the soak runs xtask's `stop`, `start`, `pause`, `resume`: a copy of this very binary
/// (`cargo test` may have rebuilt the one in the target directory since it started), told where
/// the workspace and the built services are, as `cargo xtask` would tell it.
fn xtask_command(settings: &Settings, data: &std::path::Path) -> Result<String> {
    let copy = data.join("xtask");
    // The running executable, even if its file has been replaced since (Linux).
    std::fs::copy("/proc/self/exe", &copy)
        .or_else(|_| std::fs::copy(std::env::current_exe()?, &copy))
        .with_context(|| format!("copying the xtask binary to {}", copy.display()))?;
    let manifest = settings.root.join("crates/xtask");
    // Where the services' binaries are: `cargo` would tell the binary, run directly it must be told.
    Ok(format!(
        "CARGO_MANIFEST_DIR='{}' CARGO_TARGET_DIR='{}' '{}'",
        manifest.display(),
        settings.target_dir.display(),
        copy.display()
    ))
}

/// `dashboards/check.sh` against the soak's running topology, with a real Prometheus.
fn live_dashboards_check(settings: &Settings) -> Result<ExitStatus> {
    let mut soak = settings.clone();
    soak.port_offset = SOAK_PORT_OFFSET;
    let topology = Topology::new(
        &soak,
        ReplicaCounts {
            delivery: 2,
            messaging: 2,
        },
    );
    let urls: Vec<String> = topology
        .services()
        .filter_map(|c| Some(format!("{c}=http://{}/metrics", c.admin_address(&soak)?)))
        .collect();
    step!("Dashboards and alert rules against the soak's topology, with Prometheus");
    Command::new("bash")
        .arg(settings.root.join("dashboards/check.sh"))
        .env("REALCHAT_METRICS_URLS", urls.join(","))
        .env("REALCHAT_PROMETHEUS_CHECK", "1")
        .current_dir(&settings.root)
        .status()
        .context("cannot run dashboards/check.sh")
}

/// `contract/check.sh` (Schemathesis) against the soak's gateway, after the soak: the API as the
/// OpenAPI document describes it, from a gateway that lived through every fault.
fn contract_check(settings: &Settings) -> Result<ExitStatus> {
    step!("The API against its OpenAPI document, with Schemathesis");
    Command::new("bash")
        .arg(settings.root.join("contract/check.sh"))
        .arg(format!("http://127.0.0.1:{}", 8080 + SOAK_PORT_OFFSET))
        .current_dir(&settings.root)
        .status()
        .context("cannot run contract/check.sh")
}

/// The soak's topology runs this many ports above the default one.
pub(crate) const SOAK_PORT_OFFSET: u16 = 1000;

/// The soak restarts PostgreSQL with Debian's `pg_ctlcluster` (the bench's default); where
/// there is none, that fault is left out (said so) rather than failing the run.
fn postgres_restart() -> Vec<&'static str> {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("pg_ctlcluster").is_file())
    });
    if found {
        Vec::new()
    } else {
        ui::warning!("pg_ctlcluster is not installed: the soak will not restart PostgreSQL");
        vec!["--postgres-restart-command", "true"]
    }
}

/// The short soak's seed: its two minutes break messaging twice, the gateway twice, PostgreSQL,
/// Redis (hung), the broker (SIGKILL) and a delivery replica (`bench soak --dry-run` lists it).
const SOAK_SEED: u64 = 19;
const SOAK_SECONDS: u32 = 120;

/// Runs `bench soak` against a topology of its own: beside a developer's `cargo xtask up`, with
/// ports 1,000 higher, its own broker, Redis, databases (`soak_*`) and data directory, all
/// stopped and removed afterwards (the databases stay, reused by the next run).
fn soak(settings: &Settings) -> Result<ExitStatus> {
    let data = settings.data_dir.join("soak");
    let _ = std::fs::remove_dir_all(&data);
    let env = [
        ("REALCHAT_DATA_DIR", data.display().to_string()),
        (
            "REALCHAT_TOPOLOGY_PORT_OFFSET",
            SOAK_PORT_OFFSET.to_string(),
        ),
        ("REALCHAT_KAFKA_BROKERS", "127.0.0.1:10092".to_owned()),
        ("REALCHAT_TOPOLOGY_REDIS_PORT", "7390".to_owned()),
        ("REALCHAT_TOPOLOGY_DATABASE_PREFIX", "soak_".to_owned()),
        // The soak registers users from one address.
        ("REALCHAT_GATEWAY_AUTH_IP_RATE", "1000".to_owned()),
        ("REALCHAT_GATEWAY_AUTH_IP_BURST", "5000".to_owned()),
    ];
    let xtask = |args: &[&str]| {
        let mut command = cargo(&settings.root, &["xtask"]);
        command.args(args).envs(env.iter().map(|(k, v)| (k, v)));
        command
    };
    let status = xtask(&[
        "up",
        "--delivery-replicas",
        "2",
        "--messaging-replicas",
        "2",
    ])
    .status()
    .context("cannot run cargo xtask up")?;
    let result = if status.success() {
        let soaked = cargo(
            &settings.root,
            &["run", "--quiet", "-p", "bench", "--", "soak"],
        )
        .args([
            "--url",
            &format!("http://127.0.0.1:{}", 8080 + SOAK_PORT_OFFSET),
        ])
        .args(["--seed", &SOAK_SEED.to_string()])
        .args(["--duration", &SOAK_SECONDS.to_string()])
        .args(["--fault-every", "10,20"])
        .args(["--pairs", "6", "--group-sizes", "30", "--rate", "20"])
        .args(["--delivery-replicas", "2", "--messaging-replicas", "2"])
        .args(postgres_restart())
        // This very binary, not `cargo xtask`: a fault must not wait for cargo's build lock.
        .args(["--xtask", &xtask_command(settings, &data)?])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .context("cannot run bench soak");
        match soaked {
            // The dashboards and alerts against the metrics of a topology that just lived
            // through every fault: every name they use is scraped, every query evaluates.
            Ok(status) if status.success() => match live_dashboards_check(settings) {
                Ok(status) if status.success() => contract_check(settings),
                other => other,
            },
            other => other,
        }
    } else {
        Ok(status)
    };
    if let Err(error) = xtask(&["down"]).status() {
        ui::warning!("cannot stop the soak's topology: {error}");
    }
    if matches!(&result, Ok(status) if status.success()) {
        let _ = std::fs::remove_dir_all(&data);
    }
    result
}

/// The checks of what packages and watches the services: the Nix files, docker-compose and its
/// Dockerfile, the Terraform modules (against the settings each binary prints), and the
/// dashboards and alert rules
/// (offline; the soak checks them against its running topology). They install their tools into
/// a cache on first use.
fn packaging_checks(settings: &Settings) -> Result<ExitStatus> {
    let dir = settings.data_dir.join("settings");
    crate::service_settings::write(settings, &dir)?;
    crate::readme_settings::check(&settings.root.join("README.md"), &dir)?;
    step!("README.md's configuration table matches what every binary reads");
    let mut status = ExitStatus::default();
    for script in [
        "nixos-tests/check.sh",
        "compose/check.sh",
        "infra/check.sh",
        "dashboards/check.sh",
    ] {
        status = Command::new("bash")
            .arg(settings.root.join(script))
            .env("REALCHAT_SETTINGS_DIR", &dir)
            .current_dir(&settings.root)
            .status()
            .with_context(|| format!("cannot run {script}"))?;
        if !status.success() {
            ui::warning!("{script} failed ({status})");
            break;
        }
    }
    Ok(status)
}

/// Connections the tests may hold at once (in-process services, test databases, pgbench).
const TEST_CONNECTIONS: i64 = 60;

/// Says, before the tests start, when PostgreSQL has too few connections free for them (another
/// `cargo xtask up` on the same server holds its own), and who holds them: otherwise the failure
/// comes later, as "sorry, too many clients already" in whichever test was unlucky. Needs `psql`;
/// without it, says nothing.
fn warn_if_postgres_is_nearly_full(settings: &Settings) {
    let query = "SELECT current_setting('max_connections')::int - count(*), \
                 current_setting('max_connections'), \
                 string_agg(DISTINCT coalesce(datname, '-'), ',') FROM pg_stat_activity";
    let Ok(output) = Command::new("psql")
        .args([settings.postgres.as_str(), "-Atc", query])
        .output()
    else {
        return;
    };
    let answer = String::from_utf8_lossy(&output.stdout);
    let mut fields = answer.trim().split('|');
    let (Some(free), Some(max), Some(holders)) = (fields.next(), fields.next(), fields.next())
    else {
        return;
    };
    let Ok(free) = free.parse::<i64>() else {
        return;
    };
    if free < TEST_CONNECTIONS {
        ui::warning!(
            "PostgreSQL has {free} of its {max} connections free and the tests may need \
             {TEST_CONNECTIONS}; connections are held on the databases {holders}. If tests fail \
             with \"too many clients already\", stop what holds them (`cargo xtask down` for a \
             local topology) or raise max_connections"
        );
    } else {
        ui::detail!("PostgreSQL has {free} of {max} connections free");
    }
}

/// A cargo command run from the workspace root with inherited output.
fn cargo(root: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(config::cargo());
    command.args(args).current_dir(root);
    command
}

/// Passes a child's exit code through; death by signal becomes 1.
fn exit_code(status: ExitStatus) -> ExitCode {
    status
        .code()
        .and_then(|code| u8::try_from(code).ok())
        .map_or(ExitCode::FAILURE, ExitCode::from)
}

/// Infrastructure that `test` started itself and therefore stops again, on
/// success, failure or early return alike; what was already running stays.
/// (Ctrl-C ends xtask without this cleanup; `cargo xtask down` does it then.)
struct StartedByUs<'a> {
    system: &'a System,
    components: Vec<Component>,
}

impl<'a> StartedByUs<'a> {
    fn new(system: &'a System) -> Self {
        Self {
            system,
            components: Vec::new(),
        }
    }
}

impl Drop for StartedByUs<'_> {
    fn drop(&mut self) {
        if self.components.is_empty() {
            return;
        }
        step!("Stopping what `xtask test` started");
        for component in self.components.iter().rev() {
            if let Err(err) = self.system.stop(*component, false) {
                ui::warning!("cannot stop {component}: {err:#}");
            }
        }
    }
}

/// A Tansu broker for one test run: a free port, a fresh SQLite file, gone when dropped.
struct TestBroker {
    address: String,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl TestBroker {
    fn start(tansu: &std::path::Path, data_dir: &std::path::Path) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address = format!("127.0.0.1:{port}");
        let dir = data_dir.join(format!("test-kafka-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = std::fs::File::create(dir.join("broker.log"))?;
        let url = format!("tcp://{address}");
        let child = Command::new(tansu)
            .current_dir(&dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the test broker")?;
        let broker = Self {
            address,
            dir,
            child,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while crate::probe::connect(&broker.address).is_err() {
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "the test broker did not listen on {} within 30 s",
                    broker.address
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        crate::broker::index_headers(&broker.dir.join("tansu.db"));
        step!(
            "test broker: {} (data in {})",
            broker.address,
            broker.dir.display()
        );
        Ok(broker)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
