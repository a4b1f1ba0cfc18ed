//! Listening sockets, as every service opens them.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;

/// Binds `addr`; on failure the error names the setting it came from (`variable`).
pub async fn bind(variable: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {variable}={addr}"))
}

/// Where `listener` is bound (port 0 resolved); `0.0.0.0:0` if the system cannot say.
pub fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into())
}
