//! `gateway`: the public HTTP edge of RealChat.

use clap::{Parser, Subcommand};
use realchat_gateway::{Options, Service};
use realchat_runtime::{Shutdown, config::CommonOptions, telemetry};

/// RealChat gateway: the public HTTP API, token checks and rate limits.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
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
    let _telemetry = telemetry::init("gateway", &cli.common)?;
    let shutdown = Shutdown::new(cli.common.shutdown_grace());
    shutdown.listen_for_signals();
    let service = Service::build(cli.options).await?;
    tracing::info!(addr = %service.local_addr(), admin = %service.admin_addr(), "gateway started");
    service.run(shutdown).await
}
