//! `cargo xtask`: RealChat's local topology manager and task runner.
//!
//! It runs the whole system on one machine: a Tansu broker (Kafka protocol,
//! SQLite storage), a private redis-server, and the Rust services, against an
//! existing PostgreSQL. Components are plain processes that outlive xtask;
//! their state lives in the data dir (`.realchat/` by default):
//!
//! ```text
//! .realchat/
//!   topology.state   options of the last `up`, reused by `start`
//!   run/<name>.pid   one per running component
//!   logs/<name>.log  appended output of each component
//!   kafka/           the broker's SQLite database
//!   redis/           Redis' working directory
//! ```
//!
//! It depends on nothing but `clap` and `anyhow`: probes speak Redis RESP and
//! HTTP/1.0 over `std::net`, and signals go through the `kill` utility, so it
//! builds in seconds and needs no `unsafe`.

mod broker;
mod config;
mod lifecycle;
mod probe;
mod process;
mod prometheus;
mod readme_settings;
mod service_settings;
mod test;
mod topology;
mod ui;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::{EnvArgs, RunOptions, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "RealChat's local topology manager and task runner",
    after_help = "Components: kafka, redis, auth, profile, messaging-1..N, delivery-1..N, gateway."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,

    #[command(flatten)]
    env: EnvArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build and start the whole system; healthy running components are left alone.
    Up {
        /// Build and run the services with the release profile.
        #[arg(long)]
        release: bool,

        /// Number of delivery replicas, delivery-1..N (ports 8081.. and admin 9184..).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
        delivery_replicas: u16,

        /// Number of messaging replicas, messaging-1..N (ports 7052, 7152, … and admin 9182,
        /// 9282, …); the gateway and delivery call messaging-1, every replica runs a relay.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
        messaging_replicas: u16,

        /// Skip `cargo build` and start the binaries already built.
        #[arg(
            long,
            env = "REALCHAT_XTASK_SKIP_BUILD",
            value_parser = clap::builder::BoolishValueParser::new()
        )]
        no_build: bool,

        /// Start a Prometheus on 127.0.0.1:9090 too, scraping every instance with the alert
        /// rules of dashboards/prometheus (for a Grafana of one's own: README, "Operating it").
        #[arg(long)]
        with_prometheus: bool,
    },

    /// Stop everything: the services (in reverse start order), then Redis and the broker.
    Down,

    /// Show each component's state, pid and addresses.
    Status,

    /// Print the end of a component's log.
    Logs {
        /// Component (or task, e.g. `tansu-install`) whose log to show.
        name: String,

        /// Keep printing what is appended.
        #[arg(short, long)]
        follow: bool,

        /// Number of lines to print.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },

    /// Stop one component: SIGTERM, then SIGKILL after 15 s.
    Stop {
        /// Component name, e.g. `kafka`, `redis`, `auth`, `delivery-2`.
        name: String,

        /// Send SIGKILL at once, simulating a crash.
        #[arg(long)]
        kill: bool,
    },

    /// Freeze one component with SIGSTOP: it hangs, neither answering nor refusing.
    Pause {
        /// Component name, e.g. `redis`, `kafka`, `delivery-1`.
        name: String,
    },

    /// Let a paused component go on (SIGCONT).
    Resume {
        /// Component name.
        name: String,
    },

    /// Start one component as the last `up` ran it (release or not, replica count); never rebuilds.
    Start {
        /// Component name, e.g. `kafka`, `redis`, `auth`, `delivery-2`.
        name: String,
    },

    /// Write each service's settings (`<binary> settings`) as `DIR/<binary>.json`.
    ///
    /// The packaging checks compare the NixOS module, docker-compose and Terraform against them.
    Settings {
        /// Directory for the files; created if missing.
        dir: std::path::PathBuf,
    },

    /// Check formatting and lints, then run the workspace tests against local infrastructure.
    ///
    /// Starts the broker and Redis if they are not running, and stops again
    /// only what it started itself.
    Test {
        /// Extra arguments for `cargo test --workspace`, after `--`
        /// (e.g. `cargo xtask test -- -p auth -- --nocapture`).
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // The reader went away (`cargo xtask logs kafka | head`): not an error.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    let settings = Settings::resolve(cli.env)?;
    match cli.command {
        Cmd::Up {
            release,
            delivery_replicas,
            messaging_replicas,
            no_build,
            with_prometheus,
        } => {
            let options = RunOptions {
                release,
                delivery_replicas,
                messaging_replicas,
            };
            lifecycle::up(settings, options, !no_build, with_prometheus)?;
        }
        Cmd::Down => lifecycle::down(settings)?,
        Cmd::Status => lifecycle::status(settings)?,
        Cmd::Logs {
            name,
            follow,
            lines,
        } => lifecycle::logs(settings, &name, follow, lines)?,
        Cmd::Stop { name, kill } => lifecycle::stop(settings, &name, kill)?,
        Cmd::Start { name } => lifecycle::start(settings, &name)?,
        Cmd::Pause { name } => lifecycle::freeze(settings, &name, true)?,
        Cmd::Resume { name } => lifecycle::freeze(settings, &name, false)?,
        Cmd::Settings { dir } => service_settings::write(&settings, &dir)?,
        Cmd::Test { cargo_test_args } => return test::run(settings, &cargo_test_args),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_build_is_a_plain_flag() -> Result<()> {
        let cli = Cli::try_parse_from(["xtask", "up", "--no-build", "--delivery-replicas", "3"])?;
        let Cmd::Up {
            no_build,
            delivery_replicas,
            ..
        } = cli.command
        else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert!(no_build);
        assert_eq!(delivery_replicas, 3);
        Ok(())
    }

    #[test]
    fn test_passes_trailing_args_through() -> Result<()> {
        let cli = Cli::try_parse_from(["xtask", "test", "--", "--nocapture", "-q"])?;
        let Cmd::Test { cargo_test_args } = cli.command else {
            anyhow::bail!("parsed as {:?}", cli.command);
        };
        assert_eq!(cargo_test_args, ["--nocapture", "-q"]);
        Ok(())
    }
}
