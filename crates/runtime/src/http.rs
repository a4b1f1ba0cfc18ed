//! The HTTP server loop every RealChat HTTP listener uses (the gateway, delivery, admin ports).
//!
//! `axum::serve` hides the connection builder, and we need three things from it:
//!
//! - a header-read timeout, so a client that trickles headers (slowloris) cannot hold a connection;
//! - optional TLS (rustls), with the handshake on the connection's own task and under a timeout so
//!   a slow handshake never stalls the accept loop;
//! - a graceful drain: on shutdown stop accepting (serving the connections already queued in the
//!   kernel rather than resetting them), let in-flight requests finish (keep-alive connections
//!   close after their current request), bounded by a drain timeout.
//!
//! Every request carries the peer address as an [`axum::extract::ConnectInfo`] extension.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How a listener serves its connections.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Longest time a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Longest time in-flight requests get after shutdown starts.
    pub drain_timeout: Duration,
    /// Serve HTTPS with this configuration ([`crate::tls::load_tls`]) instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Fix each connection's kernel send buffer (`SO_SNDBUF`) instead of letting it grow to
    /// megabytes: bounds the memory a long-lived socket can hold, and lets a server notice a
    /// reader that stopped reading within kilobytes rather than megabytes.
    pub send_buffer: Option<usize>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
            tls: None,
            send_buffer: None,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let connections = Connections {
        app,
        builder,
        acceptor,
        graceful: &graceful,
        handshake_timeout: options.header_read_timeout,
        send_buffer: options.send_buffer,
    };

    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => connections.serve(stream, peer),
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning, the listener is still good.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }

    // Connections the kernel completed but we had not accepted yet are clients that believe they
    // are connected; closing the listener would reset them. Accept and serve them too.
    let std_listener = listener.into_std()?;
    std_listener.set_nonblocking(true)?;
    while let Ok((stream, peer)) = std_listener.accept() {
        match stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream))
        {
            Ok(stream) => connections.serve(stream, peer),
            Err(error) => tracing::debug!(%peer, %error, "could not adopt a queued connection"),
        }
    }
    drop(std_listener);

    // A connection that has not started its first request yet counts as idle to hyper and would be
    // closed at once; give fresh connections a moment to get their request in.
    tokio::time::sleep(SETTLE.min(options.drain_timeout)).await;
    tokio::select! {
        () = graceful.shutdown() => tracing::debug!("all connections drained"),
        () = tokio::time::sleep(options.drain_timeout) => {
            tracing::warn!("connections still open after the drain timeout, closing them");
        }
    }
    Ok(())
}

/// How long a drain waits before closing idle connections (see [`serve`]).
const SETTLE: Duration = Duration::from_millis(300);

/// Everything needed to serve one accepted connection.
struct Connections<'a> {
    app: Router,
    builder: auto::Builder<TokioExecutor>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    graceful: &'a GracefulShutdown,
    handshake_timeout: Duration,
    send_buffer: Option<usize>,
}

impl Connections<'_> {
    /// Serves `stream` on its own task, watched by the graceful shutdown.
    fn serve(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        if let Some(size) = self.send_buffer
            && let Err(error) = socket2::SockRef::from(&stream).set_send_buffer_size(size)
        {
            tracing::debug!(%peer, %error, "could not set the send buffer");
        }
        let service = connection_service(self.app.clone(), peer);
        let builder = self.builder.clone();
        match &self.acceptor {
            None => {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let conn = self.graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%peer, error = %error, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = self.graceful.watcher();
                let handshake_timeout = self.handshake_timeout;
                tokio::spawn(async move {
                    let Some(tls_stream) =
                        tls_handshake(&acceptor, stream, handshake_timeout, peer).await
                    else {
                        return;
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls_stream), service)
                        .into_owned();
                    if let Err(error) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %error, "connection ended with an error");
                    }
                });
            }
        }
    }
}

async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// `app` with the peer address attached to every request, as hyper wants a service.
#[derive(Clone)]
struct ConnectionService {
    app: Router,
    peer: SocketAddr,
}

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        tower::Service::call(&mut self.app.clone(), request)
    }
}

fn connection_service(app: Router, peer: SocketAddr) -> ConnectionService {
    ConnectionService { app, peer }
}
