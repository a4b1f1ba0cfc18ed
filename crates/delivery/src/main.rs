//! `delivery`: the delivery service binary.

use clap::{Parser, Subcommand};
use realchat_delivery::{Options, Service};
use realchat_runtime::{Shutdown, config::CommonOptions, telemetry};

/// RealChat delivery service: WebSockets, the consumer group that fans messages out, presence.
#[derive(Debug, Parser)]
#[command(name = "delivery", version, about)]
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
    let _telemetry = telemetry::init("delivery", &cli.common)?;
    let shutdown = Shutdown::new(cli.common.shutdown_grace());
    shutdown.listen_for_signals();
    let service = Service::build(cli.options).await?;
    tracing::info!(addr = %service.local_addr(), admin = %service.admin_addr(), replica = %service.replica_id(), "delivery replica started");
    service.run(shutdown).await
}
