//! `cargo xtask test`: formatting, lints, then the workspace tests against
//! real infrastructure, leaving the machine as it was found.

use std::process::{Command, ExitCode, ExitStatus};

use anyhow::{Context as _, Result};

use crate::{
    config::{self, Settings},
    lifecycle::{self, Ensured, System},
    topology::Component,
    ui::{self, step},
};

/// Runs the stages in order, stopping at the first failure, and returns the
/// exit code of the failing stage (or of `cargo test`).
pub(crate) fn run(settings: Settings, cargo_test_args: &[String]) -> Result<ExitCode> {
    let root = settings.root.clone();

    step!("[1/4] Formatting: cargo fmt --all --check");
    let status = cargo(&root, &["fmt", "--all", "--check"]).status()?;
    if !status.success() {
        step!("Formatting differs; `cargo fmt --all` fixes it");
        return Ok(exit_code(status));
    }

    step!("[2/4] Lints: cargo clippy --workspace --all-targets -- -D warnings");
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

    step!("[3/4] Infrastructure: PostgreSQL, a broker of the test run's own, the topology's Redis");
    lifecycle::check_postgres(&settings)?;
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
    step!("[4/4] Tests: cargo {}", command_line.join(" "));
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
    Ok(exit_code(status))
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
