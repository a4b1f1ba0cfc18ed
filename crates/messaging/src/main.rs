//! `messaging`: the messaging service binary (see `realchat_runtime::service`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    realchat_runtime::service::main_with_database::<realchat_messaging::Service>().await
}
