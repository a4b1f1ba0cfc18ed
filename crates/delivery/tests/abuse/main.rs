//! What one socket and one user can make delivery do: frames are budgeted per socket, "not a
//! member" answers are remembered, a resume's work is bounded, sockets per user are capped.
//!
//! A test binary of its own: some tests here count calls in the process-wide metrics, which
//! other tests' frames would add to.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use test_support::{TestApp, counter_value, ws::Socket};
use uuid::Uuid;

/// How long a test waits for something that should take milliseconds.
const SOON: Duration = Duration::from_secs(20);

/// Held by the tests that count membership checks in the process-wide metrics.
static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_past_the_budget_are_answered_rate_limited_and_a_flood_is_closed_with_1008() {
    let app = TestApp::builder()
        .delivery_replicas(1)
        .delivery(|o| {
            o.frames_per_second = 1;
            o.frame_burst = 5;
        })
        .spawn()
        .await;
    let user = app.signed_up().await;
    let mut socket = app.socket(&user).await;

    for _ in 0..5 {
        socket.send(&json!({"type": "ping"})).await;
        socket.expect("pong", SOON).await;
    }
    socket.send(&json!({"type": "ping"})).await;
    let refused = socket.expect("error", SOON).await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    let retry_after_ms = refused["retry_after_ms"].as_u64().unwrap();
    assert!((1..=1000).contains(&retry_after_ms), "{refused}");

    // A client that waits as told is served again, on the same socket.
    tokio::time::sleep(Duration::from_millis(retry_after_ms + 50)).await;
    socket.send(&json!({"type": "ping"})).await;
    socket.expect("pong", SOON).await;

    // One that does not is closed.
    for _ in 0..100 {
        if socket
            .send_raw(tokio_tungstenite::tungstenite::Message::text(
                r#"{"type":"ping"}"#,
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(socket.closed(SOON).await, 1008);
    let metrics = app.delivery[0].metrics(&app.http).await;
    assert_eq!(
        counter_value(
            &metrics,
            "delivery_sessions_closed_total",
            "too_many_frames"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_in_a_conversation_the_user_is_not_in_asks_messaging_once() {
    let _counting = COUNTING.lock().await;
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let user = app.member().await;
    let mut socket = app.socket(&user).await;
    let before = not_member_checks(&app).await;
    let stranger = Uuid::new_v4();
    for _ in 0..20 {
        socket
            .send(&json!({"type": "typing", "conversation_id": stranger}))
            .await;
        assert_eq!(socket.expect("error", SOON).await["code"], "not_found");
    }
    assert_eq!(not_member_checks(&app).await - before, 1.0);
}

/// Conversations messaging said the user is not in, asked by delivery so far (in this process).
async fn not_member_checks(app: &TestApp) -> f64 {
    let metrics = app.delivery[0].metrics(&app.http).await;
    counter_value(&metrics, "delivery_membership_checks_total", "not_member")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_naming_unknown_conversations_is_bounded_by_the_budget() {
    let _counting = COUNTING.lock().await;
    let app = TestApp::builder()
        .delivery_replicas(1)
        .delivery(|o| {
            o.frames_per_second = 1;
            o.frame_burst = 10;
        })
        .spawn()
        .await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;
    app.send(&bob, &conversation, "one").await;
    app.send(&bob, &conversation, "two").await;
    let mut socket = app.socket(&alice).await;
    let before = not_member_checks(&app).await;

    // Alice's own conversation and 500 made-up ones.
    let mut cursors = serde_json::Map::new();
    cursors.insert(conversation.clone(), json!(0));
    for _ in 0..500 {
        cursors.insert(Uuid::new_v4().to_string(), json!(0));
    }
    socket
        .send(&json!({"type": "resume", "cursors": cursors}))
        .await;

    let (mut answered, mut messages, mut resumed, mut deferred) = (Vec::new(), 0, 0, None);
    while deferred.is_none() {
        let frame = match socket.next(SOON).await {
            Some(test_support::ws::Frame::Json(frame)) => frame,
            other => panic!("the socket ended before the resume did: {other:?}"),
        };
        match (frame["type"].as_str(), frame["code"].as_str()) {
            (Some("message"), _) => messages += 1,
            (Some("resumed"), _) => {
                assert_eq!(frame["conversation_id"], conversation.as_str());
                resumed += 1;
            }
            (Some("error"), Some("not_found")) => {
                // "conversation <id> not found"
                let message = frame["message"].as_str().unwrap();
                answered.push(message.split(' ').nth(1).unwrap().to_owned());
            }
            (Some("error"), Some("rate_limited")) => deferred = Some(frame),
            _ => {}
        }
    }
    let deferred = deferred.unwrap();
    let not_found = answered.len();
    assert_eq!(
        (messages, resumed),
        (2, 1),
        "the known conversation is replayed"
    );
    // The resume frame took one of the ten, so about nine made-up ones were checked (a slow
    // machine may have earned one more meanwhile); the rest were deferred, said in one frame.
    let deferred_count: usize = deferred["message"]
        .as_str()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((9..=11).contains(&not_found), "{not_found} checked");
    assert_eq!(not_found + deferred_count, 500, "{deferred}");
    assert!(deferred["retry_after_ms"].as_u64().unwrap() >= 1);
    assert_eq!(not_member_checks(&app).await - before, not_found as f64);

    // Naming made-up conversations already answered is answered from memory: no new checks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again: serde_json::Map<String, serde_json::Value> =
        answered.iter().map(|id| (id.clone(), json!(0))).collect();
    socket
        .send(&json!({"type": "resume", "cursors": again}))
        .await;
    for _ in 0..not_found {
        assert_eq!(socket.expect("error", SOON).await["code"], "not_found");
    }
    assert_eq!(not_member_checks(&app).await - before, not_found as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_per_user_are_capped_across_replicas_before_the_upgrade() {
    let app = TestApp::builder()
        .delivery_replicas(2)
        .delivery(|o| o.max_sockets_per_user = 3)
        .spawn()
        .await;
    let user = app.signed_up().await;
    let first = app.socket_to(0, &user).await;
    let _second = app.socket_to(0, &user).await;
    let _third = app.socket_to(1, &user).await;

    for replica in 0..2 {
        let url = format!("ws://{}/v1/ws", app.delivery[replica].addr);
        let refused = Socket::try_connect(&url, Some(&user.access_token))
            .await
            .unwrap_err();
        let (status, body) = test_support::ws::refusal(refused);
        assert_eq!(status, 429, "replica {replica}");
        assert_eq!(body["error"]["code"], "rate_limited");
    }
    // Another user is not affected.
    let other = app.signed_up().await;
    let _theirs = app.socket_to(1, &other).await;

    // Closing one makes room again.
    drop(first);
    let url = format!("ws://{}/v1/ws", app.delivery[1].addr);
    test_support::eventually("a socket to be admitted after one closed", SOON, || {
        let (url, token) = (url.clone(), user.access_token.clone());
        async move { Socket::try_connect(&url, Some(&token)).await.ok() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_replica_still_holds_a_user_to_the_cap() {
    // Nothing listens there: every Redis call fails.
    let app = TestApp::builder()
        .delivery_replicas(1)
        .delivery_redis("redis://127.0.0.1:1")
        .delivery(|o| o.max_sockets_per_user = 2)
        .spawn()
        .await;
    let user = app.signed_up().await;
    let url = format!("ws://{}/v1/ws", app.delivery[0].addr);
    let _first = Socket::connect(&url, &user.access_token).await;
    let _second = Socket::connect(&url, &user.access_token).await;
    let (status, body) = test_support::ws::refusal(
        Socket::try_connect(&url, Some(&user.access_token))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
}
