//! `delivery`: the delivery service binary.

use clap::Parser;
use realchat_delivery::{Options, Service};
use realchat_runtime::{Shutdown, config::CommonOptions, telemetry};

/// RealChat delivery service: WebSockets, the consumer group that fans messages out, presence.
#[derive(Debug, Parser)]
#[command(name = "delivery", version, about)]
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
    let _telemetry = telemetry::init("delivery", &cli.common)?;
    let shutdown = Shutdown::new(cli.common.shutdown_grace());
    shutdown.listen_for_signals();
    let service = Service::build(cli.options).await?;
    tracing::info!(addr = %service.local_addr(), admin = %service.admin_addr(), replica = %service.replica_id(), "delivery replica started");
    service.run(shutdown).await
}
