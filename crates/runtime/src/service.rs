//! The binary of a RealChat service. What a service binary does is the same for each, so it is
//! written once: each `main.rs` names its service and calls [`main`] (or [`main_with_database`]
//! for a service that owns a database).
//!
//! `<binary>` serves; `<binary> healthcheck` asks the admin server's `/readyz` (for container
//! health checks); `<binary> settings` prints the settings it reads as JSON; with a database,
//! `<binary> migrate` creates the database if missing, applies the migrations and exits.

use std::{future::Future, net::SocketAddr};

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::{Shutdown, config::CommonOptions, settings, telemetry};

#[cfg(feature = "postgres")]
mod database;
#[cfg(feature = "postgres")]
pub use database::{DatabaseService, main_with_database};

/// What [`main`] needs of a service.
pub trait Service: Sized {
    /// The service's own options, flattened into its command line.
    type Options: Args;
    /// The binary's name, which is also the service's name in telemetry.
    const NAME: &'static str;
    /// One line for `--help`: what the service is and keeps.
    const ABOUT: &'static str;

    /// Where the admin server will listen, for `healthcheck`.
    fn admin_addr_of(options: &Self::Options) -> SocketAddr;
    /// Binds, serves until `shutdown`, then drains.
    fn serve(
        options: Self::Options,
        shutdown: Shutdown,
    ) -> impl Future<Output = anyhow::Result<()>>;
}

#[derive(Debug, Parser)]
#[command(version)]
struct Cli<O: Args, C: Subcommand> {
    #[command(subcommand)]
    command: Option<C>,
    #[command(flatten)]
    common: CommonOptions,
    #[command(flatten)]
    options: O,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 if this service's admin server says it is ready, 1 otherwise (for health checks).
    Healthcheck,
    /// Print the settings this binary reads as JSON, and exit.
    Settings,
}

/// The whole binary of service `S`.
pub async fn main<S: Service>() -> anyhow::Result<()> {
    let cli = parse::<S, Command>();
    match cli.command {
        Some(Command::Healthcheck) => crate::admin::healthcheck(S::admin_addr_of(&cli.options)),
        // Answered before parsing.
        Some(Command::Settings) | None => serve::<S>(cli.common, cli.options).await,
    }
}

fn parse<S: Service, C: Subcommand>() -> Cli<S::Options, C> {
    let command = Cli::<S::Options, C>::command()
        .name(S::NAME)
        .about(S::ABOUT);
    match Cli::<S::Options, C>::from_arg_matches(&parsed(&command)) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    }
}

/// The command line, parsed; `settings` is answered here, before the environment is parsed, so
/// a wrong value elsewhere does not hide the list.
fn parsed(command: &clap::Command) -> clap::ArgMatches {
    settings::print_if_asked_for(command);
    command.clone().get_matches()
}

async fn serve<S: Service>(common: CommonOptions, options: S::Options) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(S::NAME, &common)?;
    let shutdown = Shutdown::new(common.shutdown_grace());
    shutdown.listen_for_signals();
    S::serve(options, shutdown).await
}
