//! SIGTERM: the gateway binary stops accepting, answers everything it accepted, and exits 0.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::json;
use test_support::{TestApp, eventually, free_port};

fn sigterm(process: &tokio::process::Child) {
    let pid = process.id().unwrap().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
}

/// The gateway binary on `port`, in front of `app`'s services (its first delivery replica, if it
/// has one), with 20 s of grace for SIGTERM.
fn gateway_binary(app: &TestApp, port: u16) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_gateway"));
    command
        .env("REALCHAT_GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "REALCHAT_GATEWAY_ADMIN_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "REALCHAT_AUTH_ENDPOINT",
            format!("http://{}", app.auth_addr),
        )
        .env(
            "REALCHAT_MESSAGING_ENDPOINT",
            format!("http://{}", app.messaging_addr),
        )
        .envs(test_support::tls::internal_env("gateway"))
        .env("REALCHAT_REDIS_URL", test_support::redis_url())
        .env(
            "REALCHAT_GATEWAY_REDIS_PREFIX",
            test_support::unique("rctest:") + ":",
        )
        .env("REALCHAT_GATEWAY_RATE_LIMITS", "false")
        .env("REALCHAT_SHUTDOWN_GRACE_SECS", "20")
        .env("REALCHAT_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if let Some(replica) = app.delivery.first() {
        command.env(
            "REALCHAT_DELIVERY_ENDPOINTS",
            format!("ws://{}", replica.addr),
        );
    }
    command.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_of_logins_answers_every_accepted_request_and_exits_0() {
    // Auth runs in process (from the slice); the gateway under test is the real binary.
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;
    let port = free_port();
    let mut gateway = gateway_binary(&app, port);
    let base = format!("http://127.0.0.1:{port}");
    // A new connection per request: a request is either accepted on its own connection or
    // refused at connect, never lost in a keep-alive race.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    eventually(
        "the gateway binary to be ready",
        Duration::from_secs(15),
        || {
            let request = http.get(format!("{base}/readyz"));
            async move {
                request
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            }
        },
    )
    .await;

    let logins: Vec<_> = (0..40)
        .map(|i| {
            let request = http
                .post(format!("{base}/v1/auth/login"))
                .json(&json!({"username": session.username, "password": session.password}));
            tokio::spawn(async move {
                // Spread the burst so some requests arrive after the signal.
                tokio::time::sleep(Duration::from_millis(i * 10)).await;
                request.send().await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    sigterm(&gateway);

    let mut answered = 0;
    let mut refused = 0;
    for login in logins {
        match login.await.unwrap() {
            Ok(response) => {
                assert_eq!(
                    response.status(),
                    200,
                    "an accepted login must be answered in full"
                );
                let body: serde_json::Value = response.json().await.expect("a complete body");
                assert!(body["access_token"].is_string());
                answered += 1;
            }
            // Not accepted: the listener was already closed. Anything else is a lost request.
            Err(error) if error.is_connect() => refused += 1,
            Err(error) => panic!("an accepted request was dropped: {error:?}"),
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(25), gateway.wait())
        .await
        .expect("the gateway must exit within its grace period")
        .unwrap();

    assert!(status.success(), "exit status {status}");
    assert!(
        answered > 0,
        "the burst should overlap the shutdown ({answered} answered, {refused} refused)"
    );
    eprintln!("{answered} answered, {refused} refused at connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_the_websockets_it_proxies_with_1001_and_exits_0() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let session = app.member().await;
    let port = free_port();
    let mut gateway = gateway_binary(&app, port);
    let url = format!("ws://127.0.0.1:{port}/v1/ws");
    eventually(
        "the gateway binary to proxy a socket",
        Duration::from_secs(15),
        || {
            let (url, token) = (url.clone(), session.access_token.clone());
            async move {
                test_support::ws::Socket::try_connect(&url, Some(&token))
                    .await
                    .ok()
            }
        },
    )
    .await;
    let mut socket = test_support::ws::Socket::connect(&url, &session.access_token).await;

    sigterm(&gateway);
    // The client is told to reconnect and resume, not cut off (1006).
    assert_eq!(socket.closed(Duration::from_secs(10)).await, 1001);
    let status = tokio::time::timeout(Duration::from_secs(25), gateway.wait())
        .await
        .expect("the gateway must exit within its grace period")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
