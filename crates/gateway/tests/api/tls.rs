//! With a certificate configured, the public port speaks HTTPS (rustls) and nothing else.

use std::{process::Command, sync::Arc};

use test_support::{TestApp, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed P-256 server certificate for localhost (not a CA: rustls refuses a CA
/// certificate as a server's), made with the `openssl` tool.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key, config) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("openssl.cnf"),
    );
    std::fs::write(
        &config,
        "[req]\ndistinguished_name=dn\nx509_extensions=v3\nprompt=no\n[dn]\nCN=localhost\n\
         [v3]\nbasicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let output = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .arg("-config")
        .arg(&config)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed to run this test");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_public_port_serves_https_only() {
    let dir = std::env::temp_dir().join(unique("realchat-tls-"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir);
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
