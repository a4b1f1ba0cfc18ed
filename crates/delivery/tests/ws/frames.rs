//! The protocol's edges: who may connect, what a bad frame gets, and how sockets are closed.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::{
    TestApp,
    ws::{Frame, Socket},
};
use tokio_tungstenite::tungstenite::Message;

use crate::SOON;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_bad_token_is_refused_with_401_before_the_upgrade() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let direct = format!("ws://{}/v1/ws", app.delivery[0].addr);
    for url in [app.ws_url(), direct] {
        let (status, body) =
            test_support::ws::refusal(Socket::try_connect(&url, None).await.unwrap_err());
        assert_eq!(status, 401, "{url}");
        assert_eq!(body["error"]["code"], "unauthenticated");
        let (status, body) = test_support::ws::refusal(
            Socket::try_connect(&url, Some("not.a.jwt"))
                .await
                .unwrap_err(),
        );
        assert_eq!(status, 401, "{url}");
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_can_pass_the_token_in_the_query() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let user = app.signed_up().await;
    let url = format!("{}?access_token={}", app.ws_url(), user.access_token);
    let mut socket = Socket::try_connect(&url, None).await.unwrap();
    let ready = socket.expect("ready", SOON).await;
    assert_eq!(ready["user_id"], user.user_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_without_an_upgrade_is_a_400() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let user = app.signed_up().await;
    let response = app.get("/v1/ws", Some(&user.access_token)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_argument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_frames_and_the_socket_stays_open() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let user = app.member().await;
    let mut socket = app.socket(&user).await;

    socket.send_raw(Message::text("{not json")).await.unwrap();
    let error = socket.expect("error", SOON).await;
    assert_eq!(error["code"], "malformed_json");

    socket.send(&json!({"type": "shout"})).await;
    assert_eq!(
        socket.expect("error", SOON).await["code"],
        "invalid_argument"
    );

    socket
        .send_raw(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(
        socket.expect("error", SOON).await["code"],
        "invalid_argument"
    );

    let stranger = uuid::Uuid::new_v4();
    socket
        .send(&json!({"type": "typing", "conversation_id": stranger}))
        .await;
    assert_eq!(socket.expect("error", SOON).await["code"], "not_found");
    socket
        .send(&json!({"type": "resume", "cursors": {stranger.to_string(): 0}}))
        .await;
    assert_eq!(socket.expect("error", SOON).await["code"], "not_found");

    socket.send(&json!({"type": "ping"})).await;
    socket.expect("pong", SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_64_kib_closes_with_1009() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let user = app.signed_up().await;
    let mut socket = app.socket(&user).await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(70 * 1024));
    let before = socket_closes(&app, "1009").await;
    let _ = socket.send_raw(Message::text(big)).await;
    assert_eq!(socket.closed(SOON).await, 1009);
    assert!(socket_closes(&app, "1009").await > before);
}

/// Sockets closed with `code` so far (in this process).
async fn socket_closes(app: &TestApp, code: &str) -> f64 {
    let metrics = app.metrics().await;
    test_support::counter_value(
        &metrics,
        "delivery_socket_closes_total",
        &format!("code=\"{code}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_just_under_64_kib_is_accepted() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let user = app.signed_up().await;
    let mut socket = app.socket(&user).await;
    let padded = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(60 * 1024));
    socket.send_raw(Message::text(padded)).await.unwrap();
    socket.expect("pong", SOON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_closes_the_socket_with_1008() {
    let app = TestApp::builder()
        .delivery_replicas(1)
        .auth(|o| o.access_token_ttl_secs = 2)
        .spawn()
        .await;
    let user = app.signed_up().await;
    let mut socket = app.socket(&user).await;
    assert_eq!(socket.closed(Duration::from_secs(15)).await, 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_not_on_the_list_is_refused() {
    let app = TestApp::builder()
        .delivery_replicas(1)
        .delivery(|o| o.allowed_origins = vec!["https://chat.example".into()])
        .spawn()
        .await;
    let user = app.signed_up().await;
    let connect = |origin: &'static str| {
        let (url, token) = (app.ws_url(), user.access_token.clone());
        async move {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
            let mut request = url.into_client_request().unwrap();
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
            tokio_tungstenite::connect_async(request).await
        }
    };
    let (status, body) =
        test_support::ws::refusal(connect("https://evil.example").await.unwrap_err());
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(connect("https://chat.example").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_socket_is_closed() {
    let app = TestApp::builder()
        .delivery_replicas(1)
        .delivery(|o| {
            o.idle_timeout_secs = 5;
            o.ping_interval_secs = 1;
        })
        .spawn()
        .await;
    let user = app.signed_up().await;
    // A raw client that never answers pings: it does not read at all.
    let url = format!("ws://{}/v1/ws", app.delivery[0].addr);
    let mut socket = Socket::try_connect(&url, Some(&user.access_token))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(7)).await;
    // Reading now answers the buffered pings too late: the server has closed (answering its
    // pings can even fail first, so any close counts here, and the metric says why).
    let mut closed = false;
    while let Some(frame) = socket.next(Duration::from_secs(5)).await {
        if let Frame::Closed(_) = frame {
            closed = true;
            break;
        }
    }
    assert!(closed, "the idle socket is still open");
    let metrics = app.delivery[0].metrics(&app.http).await;
    assert_eq!(
        test_support::counter_value(&metrics, "delivery_sessions_closed_total", "idle"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_closes_that_session_s_sockets_with_1008_and_no_other() {
    let app = TestApp::builder().delivery_replicas(2).spawn().await;
    let user = app.signed_up().await;
    let login = app
        .post(
            "/v1/auth/login",
            &json!({"username": user.username, "password": user.password}),
        )
        .await;
    let other: Value = login.json().await.unwrap();
    let other_token = other["access_token"].as_str().unwrap();
    let url = |replica: usize| format!("ws://{}/v1/ws", app.delivery[replica].addr);
    let mut first = Socket::connect(&url(0), &user.access_token).await;
    let mut second = Socket::connect(&url(1), &user.access_token).await;
    let mut kept = Socket::connect(&url(0), other_token).await;
    let closes_before = socket_closes(&app, "1008").await;

    let logout = app
        .post(
            "/v1/auth/logout",
            &json!({"refresh_token": user.refresh_token}),
        )
        .await;
    assert_eq!(logout.status(), 204);

    // Both replicas close the session's sockets, and refuse its token from then on.
    assert_eq!(first.closed(SOON).await, 1008);
    assert_eq!(second.closed(SOON).await, 1008);
    assert!(socket_closes(&app, "1008").await >= closes_before + 2.0);
    let (status, body) = test_support::ws::refusal(
        Socket::try_connect(&url(1), Some(&user.access_token))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    // The user's other login keeps its socket.
    kept.send(&json!({"type": "ping"})).await;
    kept.expect("pong", SOON).await;
}
