//! The runtime every RealChat service stands on.
//!
//! - [`config`]: options shared by every binary (logging, shutdown grace, secrets).
//! - [`telemetry`]: `tracing` with human or JSON logs, OpenTelemetry export, Prometheus metrics,
//!   and W3C trace-context propagation across gRPC calls.
//! - [`shutdown`]: named tasks owned by one [`Shutdown`], signal handling, a bounded drain.
//! - [`admin`]: the per-service admin server (`/metrics`, `/healthz`, `/readyz`).
//! - [`api_error`]: API.md's error answer, and how internal statuses become one.
//! - [`bearer`]: where a request carries its access token.
//! - [`http`]: an HTTP server loop with header-read timeouts, optional TLS and graceful drain.
//! - [`net`]: binding listeners with errors that name the setting.
//! - [`jwt`]: access-token claims and a verifier that caches public keys by `kid`.
//! - `db` (feature `postgres`): pools, creating a service's database, migrations.
//! - [`grpc`]: how an API error code travels inside a gRPC status.
//! - [`format`]: how API.md writes timestamps.
//! - [`rules`]: API.md's rules that several services apply (usernames).
//! - [`collectors`]: gauges read at each scrape (the process's; pools, breakers).
//! - [`clients`]: lazily connecting gRPC clients of the services, and auth's keys for a verifier.
//! - [`tls`]: certificates reloaded from files; mutual TLS between the services.
//! - [`settings`]: the environment variables a binary reads, printed by `<binary> settings`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api_error;
pub mod bearer;
pub mod clients;
pub mod collectors;
pub mod config;
#[cfg(feature = "postgres")]
pub mod db;
pub mod format;
pub mod grpc;
pub mod http;
pub mod jwt;
pub mod net;
#[cfg(feature = "redis")]
pub mod redis_client;
pub mod rules;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use shutdown::Shutdown;
