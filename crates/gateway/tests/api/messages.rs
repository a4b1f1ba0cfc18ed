//! API.md § Messages: sending (idempotent, gapless seqs), history in both directions, read positions.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{Session, TestApp};

use crate::assert_error;

/// Two members and their direct conversation.
async fn pair(app: &TestApp) -> (Session, Session, String) {
    let (alice, bob) = (app.member().await, app.member().await);
    let created: Value = app
        .post_as(
            &alice.access_token,
            "/v1/conversations",
            &json!({"kind": "direct", "member_ids": [bob.user_id]}),
        )
        .await
        .json()
        .await
        .unwrap();
    (alice, bob, created["id"].as_str().unwrap().to_owned())
}

async fn send(
    app: &TestApp,
    who: &Session,
    conversation: &str,
    client_msg_id: &str,
    body: &str,
) -> reqwest::Response {
    app.post_as(
        &who.access_token,
        &format!("/v1/conversations/{conversation}/messages"),
        &json!({"client_msg_id": client_msg_id, "body": body}),
    )
    .await
}

async fn history(
    app: &TestApp,
    who: &Session,
    conversation: &str,
    query: &str,
) -> reqwest::Response {
    app.get(
        &format!("/v1/conversations/{conversation}/messages{query}"),
        Some(&who.access_token),
    )
    .await
}

fn seqs(page: &Value) -> Vec<i64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_answers_201_with_the_stored_message_and_a_retry_answers_200_with_the_same() {
    let app = TestApp::spawn().await;
    let (alice, _bob, conversation) = pair(&app).await;

    let first = send(&app, &alice, &conversation, "retry-me", "hello").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let retry = send(&app, &alice, &conversation, "retry-me", "hello").await;

    assert_eq!(retry.status(), StatusCode::OK);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry, first);
    assert_eq!(first["seq"], 1);
    assert_eq!(first["sender_id"], alice.user_id.as_str());
    assert_eq!(first["conversation_id"], conversation.as_str());
    assert_eq!(first["client_msg_id"], "retry-me");
    assert_eq!(first["body"], "hello");
    assert_eq!(
        first["created_at"].as_str().unwrap().len(),
        "2026-11-26T21:36:39.120Z".len()
    );
    let all: Value = history(&app, &alice, &conversation, "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seqs(&all), [1], "a retry must never store a second copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_client_msg_ids_are_validated() {
    let app = TestApp::spawn().await;
    let (alice, _bob, conversation) = pair(&app).await;

    for (id, body) in [
        ("a", String::new()),
        ("b", "x".repeat(4001)),
        ("", "fine".to_owned()),
        (&"k".repeat(129), "fine".to_owned()),
        // PostgreSQL's text cannot hold NUL: refused up front, not a 500 from the database.
        ("c", "a\u{0}b".to_owned()),
    ] {
        assert_error(
            send(&app, &alice, &conversation, id, &body).await,
            400,
            "invalid_argument",
        )
        .await;
    }
    let missing = app
        .post_as(
            &alice.access_token,
            &format!("/v1/conversations/{conversation}/messages"),
            &json!({"body": "no id"}),
        )
        .await;
    assert_error(missing, 400, "invalid_argument").await;
    // 4,000 scalar values is the limit, however many bytes they take.
    let longest = send(&app, &alice, &conversation, "emoji", &"😀".repeat(4000)).await;
    assert_eq!(longest.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_forward_backward_and_from_the_newest() {
    let app = TestApp::spawn().await;
    let (alice, bob, conversation) = pair(&app).await;
    for i in 1..=7 {
        let who = if i % 2 == 0 { &bob } else { &alice };
        assert_eq!(
            send(
                &app,
                who,
                &conversation,
                &format!("m{i}"),
                &format!("message {i}")
            )
            .await
            .status(),
            201
        );
    }

    let newest: Value = history(&app, &alice, &conversation, "?limit=3")
        .await
        .json()
        .await
        .unwrap();
    let after: Value = history(&app, &alice, &conversation, "?after_seq=2&limit=3")
        .await
        .json()
        .await
        .unwrap();
    let before: Value = history(&app, &alice, &conversation, "?before_seq=4")
        .await
        .json()
        .await
        .unwrap();
    let everything: Value = history(&app, &bob, &conversation, "?after_seq=0")
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(seqs(&newest), [7, 6, 5]);
    assert_eq!(seqs(&after), [3, 4, 5]);
    assert_eq!(seqs(&before), [3, 2, 1]);
    assert_eq!(seqs(&everything), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(everything["messages"][3]["body"], "message 4");
    let past_the_end: Value = history(&app, &alice, &conversation, "?after_seq=7")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seqs(&past_the_end), Vec::<i64>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_history_parameters_are_400() {
    let app = TestApp::spawn().await;
    let (alice, _bob, conversation) = pair(&app).await;
    for query in [
        "?limit=0",
        "?limit=201",
        "?limit=-1",
        "?limit=ten",
        "?after_seq=1&before_seq=5",
        "?after_seq=-1",
        "?before_seq=0",
        "?after_seq=x",
    ] {
        let response = history(&app, &alice, &conversation, query).await;
        assert_error(response, 400, "invalid_argument").await;
    }
    assert_eq!(
        history(&app, &alice, &conversation, "?limit=200")
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_position_only_moves_forward() {
    let app = TestApp::spawn().await;
    let (alice, bob, conversation) = pair(&app).await;
    for i in 1..=4 {
        send(&app, &bob, &conversation, &format!("m{i}"), "hi").await;
    }
    let read = |seq: i64| {
        let app = &app;
        let token = alice.access_token.clone();
        let conversation = conversation.clone();
        async move {
            app.post_as(
                &token,
                &format!("/v1/conversations/{conversation}/read"),
                &json!({"seq": seq}),
            )
            .await
            .status()
        }
    };
    let unread = || {
        let app = &app;
        let token = alice.access_token.clone();
        async move {
            let list: Value = app
                .get("/v1/conversations", Some(&token))
                .await
                .json()
                .await
                .unwrap();
            list["conversations"][0]["unread_count"].as_i64().unwrap()
        }
    };

    assert_eq!(read(3).await, StatusCode::NO_CONTENT);
    assert_eq!(unread().await, 1);
    assert_eq!(read(1).await, StatusCode::NO_CONTENT);
    assert_eq!(
        unread().await,
        1,
        "reading an older seq must not move the position back"
    );
    assert_eq!(read(99).await, StatusCode::NO_CONTENT);
    assert_eq!(unread().await, 0);
    let negative = app
        .post_as(
            &alice.access_token,
            &format!("/v1/conversations/{conversation}/read"),
            &json!({"seq": -1}),
        )
        .await;
    assert_error(negative, 400, "invalid_argument").await;
    let wrong_type = app
        .post_as(
            &alice.access_token,
            &format!("/v1/conversations/{conversation}/read"),
            &json!({"seq": "3"}),
        )
        .await;
    assert_error(wrong_type, 400, "invalid_argument").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_senders_times_fifty_get_seqs_exactly_one_to_a_thousand() {
    let app = TestApp::builder()
        .gateway(|o| o.rate_limits = false)
        .spawn()
        .await;
    let owner = app.member().await;
    let mut senders = vec![owner.clone()];
    for _ in 0..19 {
        senders.push(app.member().await);
    }
    let others: Vec<&str> = senders[1..].iter().map(|s| s.user_id.as_str()).collect();
    let group: Value = app
        .post_as(
            &owner.access_token,
            "/v1/conversations",
            &json!({"kind": "group", "member_ids": others}),
        )
        .await
        .json()
        .await
        .unwrap();
    let conversation = group["id"].as_str().unwrap().to_owned();

    let tasks: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(n, sender)| {
            let (http, base, token, conversation) =
                (app.http.clone(), app.base.clone(), sender.access_token.clone(), conversation.clone());
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..50 {
                    let response = http
                        .post(format!("{base}/v1/conversations/{conversation}/messages"))
                        .bearer_auth(&token)
                        .json(&json!({"client_msg_id": format!("s{n}-{i}"), "body": format!("{n}/{i}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 201);
                    let message: Value = response.json().await.unwrap();
                    seqs.push(message["seq"].as_i64().unwrap());
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one sender's seqs must rise: {seqs:?}"
        );
        all.extend(seqs);
    }

    all.sort_unstable();
    assert_eq!(all, (1..=1000).collect::<Vec<i64>>());
    let stored: Value = history(&app, &owner, &conversation, "?before_seq=1001&limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seqs(&stored), [1000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_retries_of_one_client_msg_id_store_one_message() {
    let app = TestApp::spawn().await;
    let (alice, _bob, conversation) = pair(&app).await;

    let attempts = (0..10).map(|_| send(&app, &alice, &conversation, "same-key", "only once"));
    let responses = futures::future::join_all(attempts).await;

    let mut created = 0;
    let mut ids = BTreeSet::new();
    for response in responses {
        match response.status().as_u16() {
            201 => created += 1,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
        let message: Value = response.json().await.unwrap();
        ids.insert(message["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1, "exactly one request creates the message");
    assert_eq!(ids.len(), 1, "every answer is the same message");
    let all: Value = history(&app, &alice, &conversation, "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seqs(&all), [1]);
}
