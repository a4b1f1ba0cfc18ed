//! With a certificate configured, the public port speaks HTTPS (rustls) and nothing else, and a
//! renewed certificate is served without a restart.

use std::{path::Path, sync::Arc, time::Duration};

use test_support::{TestApp, self_signed_certificate, tls::TestCa, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET /healthz` over TLS, trusting only the certificates in `trusted`; the response, or why
/// the handshake failed.
async fn healthz_over_tls(addr: &str, trusted: &Path) -> Result<String, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(trusted).unwrap(),
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
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

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

    let response = healthz_over_tls(&addr, &cert)
        .await
        .expect("a TLS handshake with the configured certificate");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
    // Plain HTTP on the same port gets no answer from the API.
    let plain = app.http.get(format!("{}/healthz", app.base)).send().await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = std::env::temp_dir().join(unique("realchat-tls-reload-"));
    let (old_ca, new_ca) = (TestCa::new(&dir, "old"), TestCa::new(&dir, "new"));
    let (old, new) = (old_ca.issue("gateway"), new_ca.issue("gateway"));
    // The paths the gateway is given, as a certificate manager would keep them.
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::copy(&old.cert, &cert).unwrap();
    std::fs::copy(&old.key, &key).unwrap();
    let (cert_path, key_path) = (cert.clone(), key.clone());
    let app = TestApp::builder()
        .gateway(move |o| {
            o.tls_cert = Some(cert_path);
            o.tls_key = Some(key_path);
        })
        .spawn()
        .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    assert!(healthz_over_tls(&addr, &old_ca.cert).await.is_ok());
    assert!(healthz_over_tls(&addr, &new_ca.cert).await.is_err());

    // A half-done renewal (the certificate replaced, not yet its key) is not served: the old
    // pair goes on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::copy(&new.cert, &cert).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(healthz_over_tls(&addr, &old_ca.cert).await.is_ok());

    // The key too: new connections get the new certificate.
    std::fs::copy(&new.key, &key).unwrap();
    test_support::eventually(
        "the renewed certificate to be served",
        Duration::from_secs(10),
        || {
            let (addr, trusted) = (addr.clone(), new_ca.cert.clone());
            async move { healthz_over_tls(&addr, &trusted).await.ok() }
        },
    )
    .await;
    assert!(healthz_over_tls(&addr, &old_ca.cert).await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// testssl.sh (Debian's `testssl`), the usual outside check of a TLS endpoint, against the
/// gateway: no weak protocol, no weak cipher, nothing it rates medium or worse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testssl_finds_no_weak_protocol_or_cipher() {
    let testssl = ["testssl", "testssl.sh"]
        .into_iter()
        .find(|name| {
            std::process::Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("testssl.sh (Debian's testssl.sh package) must be installed to run this test");
    let dir = std::env::temp_dir().join(unique("realchat-testssl-"));
    let ca = TestCa::new(&dir, "testssl");
    let server = ca.issue("gateway");
    let (cert, key) = (server.cert.clone(), server.key.clone());
    let app = TestApp::builder()
        .gateway(move |o| {
            o.tls_cert = Some(cert);
            o.tls_key = Some(key);
        })
        .spawn()
        .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let report = dir.join("testssl.json");
    let output = tokio::task::spawn_blocking({
        let report = report.clone();
        move || {
            std::process::Command::new(testssl)
                .args(["--quiet", "--color", "0", "--warnings", "off", "--fast"])
                .args(["--protocols", "--std", "--fs", "--vulnerable"])
                .arg("--jsonfile")
                .arg(&report)
                .arg(&addr)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let findings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap_or_else(|_| {
            panic!(
                "testssl wrote no report: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        }))
        .unwrap();
    let findings = findings.as_array().unwrap();
    assert!(findings.len() > 10, "{findings:#?}");
    let weak: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("MEDIUM" | "HIGH" | "CRITICAL")))
        .collect();
    assert!(weak.is_empty(), "testssl.sh found: {weak:#?}");
    // The old protocols are not offered at all.
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        let finding = findings
            .iter()
            .find(|f| f["id"] == old)
            .unwrap_or_else(|| panic!("no {old} finding in {findings:#?}"));
        assert_eq!(finding["finding"], "not offered", "{finding}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
