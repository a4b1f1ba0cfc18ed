//! `messaging`: the messaging service binary.

use clap::{Parser, Subcommand};
use realchat_messaging::{Options, Service};
use realchat_runtime::{Shutdown, config::CommonOptions, telemetry};

/// RealChat messaging service: conversations, messages, read positions, the outbox.
#[derive(Debug, Parser)]
#[command(name = "messaging", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    common: CommonOptions,
    #[command(flatten)]
    options: Options,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    realchat_runtime::settings::print_if_asked::<Cli>();
    let cli = Cli::parse();
    if let Some(Command::Healthcheck) = cli.command {
        return realchat_runtime::admin::healthcheck(cli.options.admin_addr);
    }
    let _telemetry = telemetry::init("messaging", &cli.common)?;
    match cli.command {
        Some(Command::Migrate) => {
            return cli
                .options
                .database()
                .migrate(&realchat_messaging::migrators())
                .await;
        }
        // Answered before telemetry starts (`Healthcheck`) or before parsing (`Settings`).
        Some(Command::Healthcheck | Command::Settings) | None => {}
    }
    let shutdown = Shutdown::new(cli.common.shutdown_grace());
    shutdown.listen_for_signals();
    let service = Service::build(cli.options).await?;
    tracing::info!(grpc = %service.grpc_addr(), admin = %service.admin_addr(), "messaging service started");
    service.run(shutdown).await
}
