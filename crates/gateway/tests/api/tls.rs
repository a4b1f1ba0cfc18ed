//! With a certificate configured, the public port speaks HTTPS (rustls) and nothing else.

use std::sync::Arc;

use test_support::{TestApp, self_signed_certificate, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_public_port_serves_https_only() {
    let dir = std::env::temp_dir().join(unique("realchat-tls-"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed_certificate(&dir);
    let (cert_path, key_path) = (cert.clone(), key.clone());
    let app = TestApp::builder()
        .gateway(move |o| {
            o.tls_cert = Some(cert_path);
            o.tls_key = Some(key_path);
        })
        .spawn()
        .await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&cert).unwrap(),
    )) {
        roots.add(der.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("a TLS handshake with the configured certificate");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
    // Plain HTTP on the same port gets no answer from the API.
    let plain = app.http.get(format!("{}/healthz", app.base)).send().await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    let _ = std::fs::remove_dir_all(&dir);
}
