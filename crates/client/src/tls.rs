//! TLS for the client's `https://` requests and `wss://` sockets.

use std::sync::Arc;

/// TLS for `wss://` sockets on the ring provider (the one the whole workspace uses).
pub(crate) fn tls_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
