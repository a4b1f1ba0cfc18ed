//! Bringing the topology up and down: the `up`, `down`, `status`, `start`,
//! `stop` and `logs` commands, built on [`System::ensure_running`] and
//! [`System::stop`], which `test` reuses for the infrastructure.

use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    broker,
    config::{self, RunOptions, Settings},
    probe,
    process::{self, Launch, Stopped},
    topology::{Component, ReplicaCounts, Topology},
    ui::{self, detail, step},
};

/// How long the infrastructure gets to become ready.
const INFRA_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a service gets to answer `/readyz` with 200.
const SERVICE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `<service> migrate` may take (it may have to create the database first).
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(120);
/// Log lines shown when a component fails to start.
const LOG_EXCERPT_LINES: usize = 30;

/// What [`System::ensure_running`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ensured {
    /// It was already running, or another process already serves its address.
    AlreadyRunning,
    /// This invocation started it.
    Started,
}

/// The local topology: where things are, which components exist, and how the
/// last `up` chose to run them.
#[derive(Debug)]
pub(crate) struct System {
    settings: Settings,
    options: RunOptions,
    topology: Topology,
}

impl System {
    pub(crate) fn new(settings: Settings, options: RunOptions) -> Self {
        let topology = Topology::new(
            &settings,
            ReplicaCounts {
                delivery: options.delivery_replicas,
                messaging: options.messaging_replicas,
            },
        );
        Self {
            settings,
            options,
            topology,
        }
    }

    /// The system as the last `up` configured it.
    pub(crate) fn load(settings: Settings) -> Result<Self> {
        let options = RunOptions::load(&settings)?;
        Ok(Self::new(settings, options))
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Makes sure `component` runs and is ready, starting it if needed.
    ///
    /// A healthy component is left alone; one still starting is waited for; a
    /// service running a binary that has since been rebuilt is restarted. For
    /// the broker this also ensures the topics exist.
    pub(crate) fn ensure_running(&self, component: Component) -> Result<Ensured> {
        let settings = &self.settings;
        let name = component.to_string();
        let probe = component.probe(settings);
        // The broker's CLI creates the topics, so it is needed even if the broker runs.
        let tansu = match component {
            Component::Kafka => Some(broker::ensure_installed(settings)?),
            _ => None,
        };

        let ensured = match process::running_pid(settings, &name, component.process_name()) {
            Some(pid) if self.runs_outdated_binary(component, pid) => {
                step!("{name}: pid {pid} runs an outdated binary; restarting it");
                process::stop(pid, component.process_name(), false)?;
                process::clear_pid(settings, &name)?;
                self.start(component, tansu.as_deref())?;
                Ensured::Started
            }
            Some(pid) => {
                if probe.check().is_ok() {
                    step!("{name}: already running (pid {pid})");
                } else {
                    step!("{name}: running (pid {pid}) but not ready; waiting");
                    self.wait_ready(component, pid)?;
                }
                Ensured::AlreadyRunning
            }
            None if probe.check().is_ok() => {
                let probed = component
                    .admin_address(settings)
                    .unwrap_or_else(|| component.address(settings));
                step!(
                    "{name}: {probed} already answers, from a process xtask did not start; using it"
                );
                Ensured::AlreadyRunning
            }
            None => {
                process::clear_pid(settings, &name)?;
                self.start(component, tansu.as_deref())?;
                Ensured::Started
            }
        };

        if let Some(tansu) = tansu {
            broker::ensure_topics(settings, &tansu)?;
            broker::index_headers(&broker::database(settings));
        }
        Ok(ensured)
    }

    /// Spawns `component` and waits until it is ready.
    fn start(&self, component: Component, tansu: Option<&Path>) -> Result<()> {
        let settings = &self.settings;
        let name = component.to_string();
        let launch = match (component, tansu) {
            (Component::Kafka, tansu) => broker::launch(
                settings,
                tansu.context("starting the broker needs its binary")?,
            )?,
            (Component::Redis, _) => self.redis_launch()?,
            (Component::Service { spec, .. }, _) => {
                let launch = self.service_launch(component)?;
                if spec.database {
                    self.migrate(component, &launch)?;
                }
                launch
            }
        };
        let pid = process::spawn_detached(settings, &name, &launch)?;
        step!(
            "{name}: started (pid {pid}); waiting for {}",
            component.probe(settings).describe()
        );
        self.wait_ready(component, pid)
    }

    /// Polls the readiness probe; on failure shows the end of the log.
    fn wait_ready(&self, component: Component, pid: u32) -> Result<()> {
        let settings = &self.settings;
        let name = component.to_string();
        let probe = component.probe(settings);
        let timeout = match component {
            Component::Service { .. } => SERVICE_READY_TIMEOUT,
            Component::Kafka | Component::Redis => INFRA_READY_TIMEOUT,
        };
        let started = Instant::now();
        loop {
            let Err(err) = probe.check() else {
                detail!("ready after {}", ui::duration(started.elapsed()));
                return Ok(());
            };
            if !process::is_alive(pid, component.process_name()) {
                process::print_log_excerpt(settings, &name, LOG_EXCERPT_LINES);
                process::clear_pid(settings, &name)?;
                bail!("{name} exited during startup");
            }
            if started.elapsed() >= timeout {
                process::print_log_excerpt(settings, &name, LOG_EXCERPT_LINES);
                bail!(
                    "{name} (pid {pid}) was not ready after {}s: {err:#}",
                    timeout.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Whether a running service's executable is not the binary `up` would
    /// start now: rebuilt since (`/proc` shows it as deleted) or the other profile.
    fn runs_outdated_binary(&self, component: Component, pid: u32) -> bool {
        let Some(spec) = component.service() else {
            return false;
        };
        let Some(running) = process::executable(pid) else {
            return false;
        };
        let expected = self.settings.binary(spec.name, self.options.release);
        running != expected.canonicalize().unwrap_or(expected)
    }

    /// The topology's own redis-server: loopback only, nothing persisted.
    fn redis_launch(&self) -> Result<Launch> {
        let redis_server = redis_server()?;
        let dir = self.settings.data_dir.join("redis");
        std::fs::create_dir_all(&dir)?;
        Ok(Launch::new(redis_server, &dir)
            .args(["--bind", "127.0.0.1"])
            .args(["--port", &self.settings.redis_port.to_string()])
            // Test and demo data only: no RDB snapshots, no AOF.
            .args(["--save", "", "--appendonly", "no"])
            .args([std::ffi::OsStr::new("--dir"), dir.as_os_str()]))
    }

    /// A service binary with its environment.
    fn service_launch(&self, component: Component) -> Result<Launch> {
        let spec = component
            .service()
            .context("service_launch called for infrastructure")?;
        let binary = self.settings.binary(spec.name, self.options.release);
        if !binary.is_file() {
            bail!(
                "{} does not exist; build it with `cargo xtask up` (or `cargo build --bins{}`)",
                binary.display(),
                if self.options.release {
                    " --release"
                } else {
                    ""
                }
            );
        }
        if spec.database {
            check_postgres(&self.settings)?;
        }
        if spec.name == "auth" {
            self.settings.ensure_key_encryption_key()?;
        }
        self.settings.ensure_internal_tls(spec.name)?;
        Ok(Launch::new(binary, &self.settings.root)
            .envs(self.topology.service_env(&self.settings, &component)))
    }

    /// Runs `<service> migrate`, which creates the service's database if
    /// missing and applies its migrations, with the service's own environment.
    fn migrate(&self, component: Component, launch: &Launch) -> Result<()> {
        let name = component.to_string();
        step!("{name}: applying database migrations");
        let migrate = launch.clone().args(["migrate"]);
        let status = process::run_logged(&self.settings, &name, &migrate, MIGRATE_TIMEOUT)?;
        if !status.success() {
            process::print_log_excerpt(&self.settings, &name, LOG_EXCERPT_LINES);
            bail!("`{name} migrate` failed ({status})");
        }
        Ok(())
    }

    /// Stops `component` if it runs; returns whether it did.
    pub(crate) fn stop(&self, component: Component, kill: bool) -> Result<bool> {
        let settings = &self.settings;
        let name = component.to_string();
        let Some(pid) = process::running_pid(settings, &name, component.process_name()) else {
            process::clear_pid(settings, &name)?;
            return Ok(false);
        };
        let how = process::stop(pid, component.process_name(), kill)?;
        process::clear_pid(settings, &name)?;
        match how {
            Stopped::Gracefully(took) => {
                step!("{name}: stopped (pid {pid}, {})", ui::duration(took));
            }
            Stopped::Killed => step!("{name}: killed (pid {pid})"),
        }
        Ok(true)
    }

    /// Components with a pid file that the current topology does not include,
    /// e.g. surplus delivery replicas after `up --delivery-replicas` went down.
    fn leftovers(&self) -> Vec<Component> {
        process::recorded_names(&self.settings)
            .iter()
            .filter_map(|name| Component::parse(name))
            .filter(|component| !self.topology.components().contains(component))
            .collect()
    }
}

/// `cargo xtask up`.
pub(crate) fn up(
    settings: Settings,
    options: RunOptions,
    build: bool,
    with_prometheus: bool,
) -> Result<()> {
    step!("Checking prerequisites");
    check_postgres(&settings)?;
    detail!("PostgreSQL is reachable at {}", settings.postgres.server());
    detail!("redis-server is {}", redis_server()?.display());
    options.save(&settings)?;

    let system = System::new(settings, options);
    let settings = system.settings();
    system.ensure_running(Component::Kafka)?;
    system.ensure_running(Component::Redis)?;

    if build {
        build_services(settings, options.release)?;
    } else {
        step!(
            "Skipping the build (--no-build); using the binaries in {}",
            settings.target_dir.display()
        );
    }

    for component in system.leftovers() {
        step!("{component} is not part of this topology any more");
        system.stop(component, false)?;
    }
    let mut running = Vec::new();
    for component in system.topology.services() {
        let spec = component.service().context("not a service")?;
        let binary = settings.binary(spec.name, options.release);
        if !binary.is_file() {
            // A crate can exist before its binary target does; the rest can still run.
            ui::warning!(
                "{component}: {} does not exist (no binary target yet?); skipping it",
                settings.display_path(&binary)
            );
            continue;
        }
        system.ensure_running(component)?;
        running.push(component);
    }

    if with_prometheus {
        crate::prometheus::start(settings, &running)?;
    }
    print_endpoints(settings, &running);
    if with_prometheus {
        detail!(
            "{:<20} http://{}  (dashboards: README, \"Operating it\")",
            "Prometheus",
            crate::prometheus::ADDR
        );
    }
    Ok(())
}

/// Runs `cargo build --workspace --bins`, showing cargo's own progress.
fn build_services(settings: &Settings, release: bool) -> Result<()> {
    let profile_flag = if release { " --release" } else { "" };
    step!("Building the services: cargo build --workspace --bins{profile_flag}");
    detail!("the first build compiles every dependency and takes many minutes");
    let mut cargo = Command::new(config::cargo());
    cargo
        .args(["build", "--workspace", "--bins"])
        .current_dir(&settings.root);
    if release {
        cargo.arg("--release");
    }
    let status = cargo.status().context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(())
}

/// The closing summary of `up`: where everything can be reached.
fn print_endpoints(settings: &Settings, services: &[Component]) {
    let row = |label: &str, value: &str| detail!("{label:<20} {value}");
    ui::blank_line();
    step!("RealChat is up");
    match services
        .iter()
        .find(|c| c.service().is_some_and(|s| s.name == "gateway"))
    {
        Some(gateway) => row(
            "public API",
            &format!("http://{}", gateway.address(settings)),
        ),
        None => row("public API", "(the gateway is not built yet)"),
    }
    for service in services {
        if let Some(admin) = service.admin_address(settings) {
            row(
                &format!("{service} metrics"),
                &format!("http://{admin}/metrics"),
            );
        }
    }
    row(
        "Kafka",
        &format!(
            "{} (Tansu {}, data in {})",
            settings.kafka_addr(),
            broker::TANSU_VERSION,
            settings.display_path(&settings.data_dir.join("kafka"))
        ),
    );
    row("Redis", &settings.redis_url());
    let mut databases: Vec<&str> = services
        .iter()
        .filter_map(Component::service)
        .filter(|spec| spec.database)
        .map(|spec| spec.name)
        .collect();
    // Replicas share their service's database.
    databases.dedup();
    let postgres = settings.postgres.server();
    match databases.as_slice() {
        [] => row("PostgreSQL", &postgres),
        names => row(
            "PostgreSQL",
            &format!(
                "{postgres} (databases: {})",
                names
                    .iter()
                    .map(|name| format!("{}{name}", settings.database_prefix))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
    row("data dir", &settings.data_dir.display().to_string());
    row(
        "logs",
        &format!(
            "cargo xtask logs <name> [-f]  (files in {})",
            settings.display_path(&settings.logs_dir())
        ),
    );
    row("stop", "cargo xtask down");
}

/// `cargo xtask down`.
pub(crate) fn down(settings: Settings) -> Result<()> {
    let system = System::load(settings)?;
    // Services before what they depend on: the reverse of the start order.
    let order = system
        .leftovers()
        .into_iter()
        .chain(system.topology.components().iter().rev().copied());
    let mut stopped = usize::from(crate::prometheus::stop(system.settings())?);
    for component in order {
        if system.stop(component, false)? {
            stopped += 1;
        }
    }
    if stopped == 0 {
        step!("Nothing was running");
    }
    Ok(())
}

/// `cargo xtask status`.
pub(crate) fn status(settings: Settings) -> Result<()> {
    let system = System::load(settings)?;
    let settings = system.settings();
    // Written, not printed, so `status | head` ends quietly instead of panicking.
    let mut out = io::stdout().lock();
    let mut line = |name: &str, state: &str, pid: &str, address: &str, admin: &str| {
        writeln!(out, "{name:<13} {state:<11} {pid:<8} {address:<22} {admin}")
    };
    line("NAME", "STATE", "PID", "ADDRESS", "ADMIN")?;

    let postgres = settings.postgres.server();
    let postgres_state = match probe::connect(&postgres) {
        Ok(_) => "reachable",
        Err(_) => "unreachable",
    };
    line(
        "postgres",
        postgres_state,
        "-",
        &postgres,
        "(not managed by xtask)",
    )?;

    let mut external = false;
    let components = system.topology.components().iter().copied();
    for component in components.chain(system.leftovers()) {
        let name = component.to_string();
        let healthy = component.probe(settings).check().is_ok();
        let (state, pid) = match process::running_pid(settings, &name, component.process_name()) {
            Some(pid) if healthy => ("running", pid.to_string()),
            Some(pid) => ("unhealthy", pid.to_string()),
            None if healthy => {
                external = true;
                ("external", "-".to_owned())
            }
            None => ("stopped", "-".to_owned()),
        };
        let admin = component
            .admin_address(settings)
            .unwrap_or_else(|| "-".to_owned());
        line(&name, state, &pid, &component.address(settings), &admin)?;
    }
    if external {
        writeln!(
            out,
            "\n`external`: the address answers, but not from a process xtask started."
        )?;
    }
    Ok(())
}

/// `cargo xtask start <name>`.
pub(crate) fn start(settings: Settings, name: &str) -> Result<()> {
    let system = System::load(settings)?;
    let component = system.topology.find(name)?;
    system.ensure_running(component)?;
    Ok(())
}

/// `cargo xtask pause <name>` and `cargo xtask resume <name>`.
pub(crate) fn freeze(settings: Settings, name: &str, frozen: bool) -> Result<()> {
    let system = System::load(settings)?;
    let component = system.topology.find(name)?;
    let settings = system.settings();
    let Some(pid) = process::running_pid(settings, name, component.process_name()) else {
        bail!("{name} is not running");
    };
    process::freeze(pid, frozen)?;
    if frozen {
        step!("{name}: paused (pid {pid}, SIGSTOP); `cargo xtask resume {name}` lets it go on");
    } else {
        step!("{name}: resumed (pid {pid}, SIGCONT)");
    }
    Ok(())
}

/// `cargo xtask stop <name> [--kill]`.
pub(crate) fn stop(settings: Settings, name: &str, kill: bool) -> Result<()> {
    let system = System::load(settings)?;
    // A leftover outside the topology (e.g. a surplus replica) can still be stopped.
    let component = match system.topology.find(name) {
        Ok(component) => component,
        Err(err) => system
            .leftovers()
            .into_iter()
            .find(|c| c.to_string() == name)
            .ok_or(err)?,
    };
    if !system.stop(component, kill)? {
        step!("{name} is not running");
    }
    Ok(())
}

/// `cargo xtask logs <name> [-f] [-n N]`.
pub(crate) fn logs(settings: Settings, name: &str, follow: bool, lines: usize) -> Result<()> {
    // Any log file can be shown, including one-off tasks such as `tansu-install`.
    let path = settings.log_file(name);
    if name.contains(['/', '\\']) || !path.is_file() {
        let mut available: Vec<String> = std::fs::read_dir(settings.logs_dir())
            .map(|entries| {
                entries
                    .filter_map(|entry| {
                        let file_name = entry.ok()?.file_name().into_string().ok()?;
                        file_name.strip_suffix(".log").map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        available.sort();
        if available.is_empty() {
            bail!("no log for `{name}`: nothing has been started yet");
        }
        bail!("no log for `{name}`; available: {}", available.join(", "));
    }
    process::print_log(&path, lines, follow)
}

/// Fails with instructions unless PostgreSQL accepts TCP connections.
pub(crate) fn check_postgres(settings: &Settings) -> Result<()> {
    let server = settings.postgres.server();
    probe::connect(&server).map(drop).with_context(|| {
        format!(
            "PostgreSQL is not reachable at {server}. Start it (e.g. `sudo service postgresql start`), \
             install it (e.g. `sudo apt install postgresql`), or point REALCHAT_POSTGRES_URL at a running server"
        )
    })
}

/// Finds `redis-server`, explaining how to get it if it is missing.
fn redis_server() -> Result<PathBuf> {
    process::which("redis-server").context(
        "redis-server is not on PATH. Install Redis (e.g. `sudo apt install redis-server` or \
         `brew install redis`); xtask runs its own instance and never uses the machine's one",
    )
}
