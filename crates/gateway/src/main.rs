//! `gateway`: the public HTTP edge of RealChat.

use clap::Parser;
use realchat_gateway::{Options, Service};
use realchat_runtime::{Shutdown, config::CommonOptions, telemetry};

/// RealChat gateway: the public HTTP API, token checks and rate limits.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    #[command(flatten)]
    common: CommonOptions,
    #[command(flatten)]
    options: Options,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    realchat_runtime::settings::print_if_asked::<Cli>();
    let cli = Cli::parse();
    let _telemetry = telemetry::init("gateway", &cli.common)?;
    let shutdown = Shutdown::new(cli.common.shutdown_grace());
    shutdown.listen_for_signals();
    let service = Service::build(cli.options).await?;
    tracing::info!(addr = %service.local_addr(), admin = %service.admin_addr(), "gateway started");
    service.run(shutdown).await
}
