//! Users and conversations for a run.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, stream};
use realchat_client::{Client, Error};

/// Registrations and logins in flight at once (each costs the auth service an argon2 hash).
const SETUP_CONCURRENCY: usize = 8;

/// A name no earlier run used.
pub(crate) fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{:x}", std::process::id() ^ nanos)
}

/// `count` new users, registered and logged in, `count` at a time up to the concurrency limit.
/// Rate limits (429) are waited out, so a gateway with its default per-IP limit on logins still
/// works, only slowly.
pub(crate) async fn users(url: &str, run: &str, count: usize) -> anyhow::Result<Vec<Client>> {
    let started = Instant::now();
    let clients: Vec<anyhow::Result<Client>> = stream::iter(0..count)
        .map(|i| user(url, run, i))
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let clients = clients.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "{count} users ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(clients)
}

async fn user(url: &str, run: &str, i: usize) -> anyhow::Result<Client> {
    let client = Client::new(url);
    let (name, password) = (format!("b{run}_{i}"), "benchmark password");
    for step in 0..2 {
        loop {
            let result = if step == 0 {
                client.register(&name, password).await.map(drop)
            } else {
                client.login(&name, password).await.map(drop)
            };
            match result {
                Ok(()) => break,
                Err(Error::Api { status: 429, .. }) => {
                    tokio::time::sleep(Duration::from_millis(500)).await
                }
                Err(error) => return Err(error).with_context(|| format!("setting up {name}")),
            }
        }
    }
    Ok(client)
}

/// The user ids of `clients`, in order.
pub(crate) fn ids(clients: &[Client]) -> Vec<String> {
    clients
        .iter()
        .map(|c| c.tokens().map(|t| t.user_id).unwrap_or_default())
        .collect()
}

/// Retries `attempt` while the server asks to wait (429, or 503 while a dependency is down), for
/// up to 60 s. A user registered a moment ago can be a member at once: a 400 is a real error.
async fn until_accepted<T, F, Fut>(mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Error::Api { status, .. })
                if (status == 429 || status == 503) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(error) => return Err(error).context("creating a conversation"),
        }
    }
}

/// One direct conversation per pair of users (0 with 1, 2 with 3, ...).
pub(crate) async fn pairs(clients: &[Client], ids: &[String]) -> anyhow::Result<Vec<String>> {
    if clients.len() < 2 || !clients.len().is_multiple_of(2) {
        bail!("direct conversations need an even number of at least 2 users");
    }
    let opened: Vec<anyhow::Result<String>> = stream::iter(0..clients.len() / 2)
        .map(|pair| async move {
            let conversation =
                until_accepted(|| clients[pair * 2].open_direct(&ids[pair * 2 + 1])).await?;
            Ok(conversation.id)
        })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    opened.into_iter().collect()
}

/// One group of everyone, created by the first user.
pub(crate) async fn group(clients: &[Client], ids: &[String]) -> anyhow::Result<String> {
    let others: Vec<&str> = ids[1..].iter().map(String::as_str).collect();
    let conversation = until_accepted(|| clients[0].create_group(&others, "benchmark")).await?;
    if conversation.member_ids.len() != clients.len() {
        bail!(
            "the group has {} members, not {}",
            conversation.member_ids.len(),
            clients.len()
        );
    }
    Ok(conversation.id)
}
