//! The binary of a gRPC service with a database of its own (auth, messaging, profile). What such
//! a binary does is the same for each, so it is written once: each `main.rs` names its service
//! and calls [`main`].
//!
//! `<binary>` serves; `<binary> migrate` creates the database if missing, applies the
//! migrations and exits; `<binary> healthcheck` asks the admin server's `/readyz` (for container
//! health checks); `<binary> settings` prints the settings it reads as JSON.

use std::{future::Future, net::SocketAddr};

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use sqlx::migrate::Migrator;

use crate::{Shutdown, config::CommonOptions, db::Database, settings, telemetry};

/// What [`main`] needs of a service.
pub trait DatabaseService: Sized {
    /// The service's own options, flattened into its command line.
    type Options: Args;
    /// The binary's name, which is also the service's name in telemetry.
    const NAME: &'static str;
    /// One line for `--help`: what the service is and keeps.
    const ABOUT: &'static str;

    /// Where the admin server will listen, for `healthcheck`.
    fn admin_addr_of(options: &Self::Options) -> SocketAddr;
    /// The database the options name.
    fn database(options: &Self::Options) -> Database<'_>;
    /// The migrations of that database, in the order they apply.
    fn migrators() -> Vec<&'static Migrator>;
    /// Binds the listeners and prepares the database.
    fn build(options: Self::Options) -> impl Future<Output = anyhow::Result<Self>>;
    /// Where the gRPC server listens.
    fn grpc_addr(&self) -> SocketAddr;
    /// Where the admin server listens.
    fn admin_addr(&self) -> SocketAddr;
    /// Serves until `shutdown`, then drains.
    fn run(self, shutdown: Shutdown) -> impl Future<Output = anyhow::Result<()>>;
}

#[derive(Debug, Parser)]
#[command(version)]
struct Cli<O: Args> {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: CommonOptions,
    #[command(flatten)]
    options: O,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database if missing, apply migrations, and exit.
    Migrate,
    /// Exit 0 if this service's admin server says it is ready, 1 otherwise (for health checks).
    Healthcheck,
    /// Print the settings this binary reads as JSON, and exit.
    Settings,
}

/// The whole binary of service `S`.
pub async fn main<S: DatabaseService>() -> anyhow::Result<()> {
    let command = Cli::<S::Options>::command().name(S::NAME).about(S::ABOUT);
    // Before parsing: the settings are printed whatever else the environment holds.
    settings::print_if_asked_for(&command);
    let cli = match Cli::<S::Options>::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    if let Some(Command::Healthcheck) = cli.command {
        return crate::admin::healthcheck(S::admin_addr_of(&cli.options));
    }
    let _telemetry = telemetry::init(S::NAME, &cli.common)?;
    match cli.command {
        Some(Command::Migrate) => {
            return S::database(&cli.options).migrate(&S::migrators()).await;
        }
        // Answered before telemetry starts (`Healthcheck`) or before parsing (`Settings`).
        Some(Command::Healthcheck | Command::Settings) | None => {}
    }
    let shutdown = Shutdown::new(cli.common.shutdown_grace());
    shutdown.listen_for_signals();
    let service = S::build(cli.options).await?;
    tracing::info!(
        grpc = %service.grpc_addr(),
        admin = %service.admin_addr(),
        "{} service started",
        S::NAME
    );
    service.run(shutdown).await
}
