//! The binary of a service that owns a database: [`main`](super::main) and `migrate`, and the
//! service's own commands.

use std::future::Future;

use clap::{CommandFactory as _, FromArgMatches as _, Subcommand};
use sqlx::migrate::Migrator;

use super::{Cli, Command, Service, parsed, serve};
use crate::{config::CommonOptions, db::Database, telemetry};

/// What [`main_with_database`] needs besides: the database a service owns.
pub trait DatabaseService: Service {
    /// The database the options name.
    fn database(options: &Self::Options) -> Database<'_>;
    /// The migrations of that database, in the order they apply.
    fn migrators() -> Vec<&'static Migrator>;

    /// Commands of the service's own, besides `migrate`, `healthcheck` and `settings` (a name
    /// and its `--help` line each); they read the same settings as the service.
    fn commands() -> Vec<clap::Command> {
        Vec::new()
    }

    /// Runs the command named `name` (one of [`DatabaseService::commands`]) and exits.
    fn command(name: &str, options: Self::Options) -> impl Future<Output = anyhow::Result<()>> {
        let _ = options;
        let name = name.to_owned();
        async move { anyhow::bail!("no command {name:?}") }
    }
}

#[derive(Debug, Subcommand)]
enum DatabaseCommand {
    /// Create the database if missing, apply migrations, and exit.
    Migrate,
    #[command(flatten)]
    Other(Command),
}

/// The whole binary of service `S`, which owns a database.
pub async fn main_with_database<S: DatabaseService>() -> anyhow::Result<()> {
    let own = S::commands();
    let mut command = Cli::<S::Options, DatabaseCommand>::command()
        .name(S::NAME)
        .about(S::ABOUT);
    for subcommand in &own {
        command = command.subcommand(subcommand.clone());
    }
    let matches = parsed(&command);
    if let Some((name, _)) = matches.subcommand()
        && own.iter().any(|c| c.get_name() == name)
    {
        let (common, options) = match (
            CommonOptions::from_arg_matches(&matches),
            S::Options::from_arg_matches(&matches),
        ) {
            (Ok(common), Ok(options)) => (common, options),
            (Err(error), _) | (_, Err(error)) => error.exit(),
        };
        let _telemetry = telemetry::init(S::NAME, &common)?;
        return S::command(name, options).await;
    }
    let cli = match Cli::<S::Options, DatabaseCommand>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    match cli.command {
        Some(DatabaseCommand::Other(Command::Healthcheck)) => {
            crate::admin::healthcheck(S::admin_addr_of(&cli.options))
        }
        Some(DatabaseCommand::Migrate) => {
            let _telemetry = telemetry::init(S::NAME, &cli.common)?;
            S::database(&cli.options).migrate(&S::migrators()).await
        }
        Some(DatabaseCommand::Other(Command::Settings)) | None => {
            serve::<S>(cli.common, cli.options).await
        }
    }
}
