//! API.md § Conventions: every error in the one shape, never a 500, never a dropped connection.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use test_support::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::assert_error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_is_400_malformed_json() {
    let app = TestApp::spawn().await;
    for body in ["{", "{\"username\": }", "not json", "", "\u{0}\u{1}"] {
        let response = app
            .http
            .post(format!("{}/v1/auth/login", app.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "malformed_json").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_the_json_content_type_is_415() {
    let app = TestApp::spawn().await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app
            .http
            .post(format!("{}/v1/auth/register", app.base))
            .body(r#"{"username":"someone","password":"long enough"}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        assert_error(request.send().await.unwrap(), 415, "unsupported_media_type").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_64_kib_is_413_whether_announced_or_streamed() {
    let app = TestApp::spawn().await;
    let big = json!({"username": "someone", "password": "x".repeat(70 * 1024)}).to_string();

    let announced = app
        .http
        .post(format!("{}/v1/auth/register", app.base))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_error(announced, 413, "payload_too_large").await;

    // Chunked, so the size is only known by reading.
    let chunks = big
        .into_bytes()
        .chunks(8 * 1024)
        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
        .collect::<Vec<_>>();
    let streamed = app
        .http
        .post(format!("{}/v1/auth/register", app.base))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_error(streamed, 413, "payload_too_large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_wrong_methods_answer_in_the_error_shape() {
    let app = TestApp::spawn().await;
    assert_error(app.get("/v1/nothing-here", None).await, 404, "not_found").await;
    assert_error(
        app.get("/v1/auth/login", None).await,
        405,
        "method_not_allowed",
    )
    .await;
    // A path parameter that does not decode to UTF-8.
    let session = app.signed_up().await;
    for path in ["/v1/conversations/%FF", "/v1/users/%C3%28"] {
        let response = app.get(path, Some(&session.access_token)).await;
        assert_error(response, 400, "invalid_argument").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_the_openapi_document_are_served() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz", None).await.status(), StatusCode::OK);
    let doc = openapi(&app).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/auth/me",
        "/v1/conversations/{id}/messages",
        "/v1/presence",
        "/v1/ws",
        "/.well-known/jwks.json",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
}

async fn openapi(app: &TestApp) -> serde_json::Value {
    app.get("/v1/openapi.json", None)
        .await
        .json()
        .await
        .unwrap()
}

/// `docs/API.md` and `/v1/openapi.json` name the same operations: a route added to the code and
/// not to the contract (or the other way round) fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_api_md_and_the_openapi_document_name_the_same_operations() {
    let app = TestApp::spawn().await;
    let doc = openapi(&app).await;
    let mut served: Vec<String> = Vec::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            served.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    // The document does not list itself.
    served.push("GET /v1/openapi.json".to_owned());
    served.sort();

    let contract =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/API.md")).unwrap();
    // Operations are written `METHOD /path` in backquotes, a query string after the path.
    let mut documented: Vec<String> = Vec::new();
    for quoted in contract.split('`').skip(1).step_by(2) {
        let Some((method, path)) = quoted.split_once(' ') else {
            continue;
        };
        if ["GET", "POST", "PATCH", "PUT", "DELETE"].contains(&method) && path.starts_with('/') {
            let path = path.split('?').next().unwrap();
            documented.push(format!("{method} {path}"));
        }
    }
    documented.sort();
    documented.dedup();
    assert_eq!(
        documented, served,
        "docs/API.md (left) against /v1/openapi.json (right)"
    );
}

/// Messaging's gRPC health service answers from its readiness check, and the gateway's
/// readiness asks it: with messaging's database gone both say so, and both recover with it. The
/// gateway's public `/readyz` tells no internals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_messagings_health_service_through_a_database_outage() {
    use realchat_runtime::clients;

    let app = TestApp::spawn().await;
    let tls = test_support::tls::internal("gateway")
        .load("gateway", &[])
        .unwrap();
    let channel = clients::channel(
        "messaging",
        &format!("http://{}", app.messaging_addr),
        &tls,
        "messaging",
    )
    .unwrap();
    let wait = Duration::from_secs(5);
    assert_eq!(
        clients::serving("messaging", channel.clone(), wait).await,
        Ok(())
    );
    assert_eq!(app.get("/readyz", None).await.status(), StatusCode::OK);

    app.messaging_db.allow_connections(false).await;
    let answer = clients::serving("messaging", channel.clone(), wait).await;
    assert!(answer.is_err(), "{answer:?}");
    // The public answer is kept for a second, and says only "not ready", in the API's shape:
    // what is missing inside is not for everyone to read.
    let refused = test_support::eventually("the gateway to be unready", wait, || async {
        let response = app.get("/readyz", None).await;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": "unavailable", "message": "not ready"}})
    );

    app.messaging_db.allow_connections(true).await;
    test_support::eventually("messaging to serve again", Duration::from_secs(20), || {
        let channel = channel.clone();
        async move { clients::serving("messaging", channel, wait).await.ok() }
    })
    .await;
    test_support::eventually("the gateway to be ready", wait, || async {
        (app.get("/readyz", None).await.status() == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_never_produce_a_500() {
    let app = TestApp::spawn().await;
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let bodies = [
        deep.as_str(),
        r#"{"username": "a", "password": "b", "username": "c"}"#,
        r#"{"username": "\ud800", "password": "long enough"}"#,
        r#"{"username": "alice", "password": 1e999}"#,
        "[1,2,3]",
        "null",
        "true",
    ];
    for path in [
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
    ] {
        for body in bodies {
            let response = app
                .http
                .post(format!("{}{path}", app.base))
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert!(
                (400..500).contains(&status),
                "{path} {body:.40} gave {status}"
            );
            let body: serde_json::Value = response.json().await.unwrap();
            assert!(body["error"]["code"].is_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_disconnected() {
    let app = TestApp::builder()
        .gateway(|o| o.header_timeout_secs = 1)
        .spawn()
        .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();

    // Never finish the headers; the server must not wait forever.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;

    assert!(
        read.is_ok(),
        "the server kept a slow-header connection open past its timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_limit_of_requests_in_progress_the_gateway_answers_503_at_once() {
    let app = TestApp::builder()
        .gateway(|o| o.max_in_flight = 1)
        .spawn()
        .await;
    // One request in progress: its body is still coming.
    let hold = || {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
        tx.try_send(Ok(b"{\"username\":".to_vec())).unwrap();
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        }));
        let held = tokio::spawn(
            app.http
                .post(format!("{}/v1/auth/login", app.base))
                .header("content-type", "application/json")
                .body(body)
                .send(),
        );
        (tx, held)
    };
    // Until the gateway has it, a probe may still get through; once it has it, nothing does. If it
    // arrives while a probe is in progress, it is the one refused: then it is sent again.
    let (refused, tx, held) = tokio::time::timeout(Duration::from_secs(10), async {
        let (mut tx, mut held) = hold();
        loop {
            if held.is_finished() {
                let shed = held.await.unwrap().unwrap();
                assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
                (tx, held) = hold();
            }
            let response = app.get("/healthz", None).await;
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                return (response, tx, held);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a second request was let through while the first was in progress");
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert_error(refused, 503, "unavailable").await;

    // The first one finishes (a bad login), and the gateway takes requests again.
    tx.send(Ok(b"\"nobody\",\"password\":\"wrong-password\"}".to_vec()))
        .await
        .unwrap();
    drop(tx);
    let first = held.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}

/// Slowloris and its body-trickling cousin: hundreds of connections that send their headers (or
/// their bodies) a byte at a time do not keep other clients from being served promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_by_the_hundred_do_not_keep_others_from_being_served() {
    // The slow clients and the good one all come from 127.0.0.1 here; the good one comes
    // through a proxy that names its own address, so the per-address limits tell them apart.
    let app = TestApp::builder()
        .gateway(|o| {
            o.header_timeout_secs = 5;
            o.trusted_proxy_hops = 1;
        })
        .spawn()
        .await;
    let session = app.signed_up().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut slow = Vec::new();
    for i in 0..300 {
        let (addr, stop) = (addr.clone(), stop.clone());
        // Two in three trickle headers; the rest send a login's headers and trickle its body.
        let start: Vec<u8> = if i % 3 == 0 {
            b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{".to_vec()
        } else {
            b"GET /v1/auth/me HTTP/1.1\r\nHost: x\r\n".to_vec()
        };
        slow.push(tokio::spawn(async move {
            let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
                return;
            };
            if stream.write_all(&start).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
                let byte: &[u8] = if i % 3 == 0 { b" " } else { b"X" };
                if stream.write_all(byte).await.is_err() {
                    return; // the gateway gave up on it, as it should
                }
            }
        }));
    }
    // Let them all connect and start trickling.
    tokio::time::sleep(Duration::from_secs(1)).await;

    for _ in 0..20 {
        let started = std::time::Instant::now();
        let me = app.get("/v1/auth/me", Some(&session.access_token)).await;
        assert_eq!(me.status(), StatusCode::OK);
        let login = app
            .http
            .post(format!("{}/v1/auth/login", app.base))
            .header("x-forwarded-for", "198.51.100.7")
            .json(&json!({"username": session.username, "password": session.password}))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a well-behaved client waited {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    for task in slow {
        let _ = task.await;
    }
}

/// Every service's gRPC calls are counted and timed by method and status (RED), on its metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_counted_by_method_and_status() {
    let app = TestApp::spawn().await;
    let user = app.signed_up().await;
    let missing = uuid::Uuid::now_v7();
    let answer = app
        .get(
            &format!("/v1/conversations/{missing}"),
            Some(&user.access_token),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let metrics = app.metrics().await;
    let calls = test_support::counter_value(
        &metrics,
        "grpc_server_requests_total",
        "method=\"/realchat.messaging.v1.Messaging/GetConversation\",code=\"NotFound\"",
    );
    assert!(calls >= 1.0, "{metrics}");
    assert!(
        metrics.contains("grpc_server_request_duration_seconds"),
        "{metrics}"
    );
    let logins = test_support::counter_value(
        &metrics,
        "grpc_server_requests_total",
        "method=\"/realchat.auth.v1.Auth/Login\",code=\"Ok\"",
    );
    assert!(logins >= 1.0, "{metrics}");
}
