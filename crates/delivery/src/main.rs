//! `delivery`: the delivery service binary (see `realchat_runtime::service`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    realchat_runtime::service::main::<realchat_delivery::Service>().await
}
