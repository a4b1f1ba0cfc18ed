//! Every message reaches every member's socket, in seq order, across replicas and reconnects.

use serde_json::json;
use test_support::{TestApp, counter_value};

use crate::SOON;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_on_different_replicas_get_everything_in_seq_order() {
    let app = TestApp::builder().delivery_replicas(2).spawn().await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;
    let mut alice_socket = app.socket_to(0, &alice).await;
    let mut bob_socket = app.socket_to(1, &bob).await;
    let before = app.metrics().await;

    for i in 1..=30 {
        let sender = if i % 3 == 0 { &bob } else { &alice };
        assert_eq!(app.send(sender, &conversation, &format!("m{i}")).await, i);
    }

    let to_bob = bob_socket.seqs_until(&conversation, 30, SOON).await;
    let to_alice = alice_socket.seqs_until(&conversation, 30, SOON).await;
    let expected: Vec<i64> = (1..=30).collect();
    assert_eq!(to_bob, expected);
    assert_eq!(to_alice, expected, "the sender's own messages come too");

    // Each message: one socket on the replica that consumed it, one on the replica it was
    // forwarded to (labelled with the node id, not the process's replica id).
    let after = app.metrics().await;
    let grew = |name: &str, labels: &str| {
        counter_value(&after, name, labels) - counter_value(&before, name, labels)
    };
    assert!(grew("delivery_frames_sent_total", r#"type="message""#) >= 60.0);
    assert!(grew("delivery_fanout_sockets_count", "") >= 60.0);
    assert!(grew("delivery_fanout_sockets_sum", "") >= 60.0);
    assert!(grew("delivery_fanout_seconds_count", "") >= 60.0);
    let forwarded = grew("delivery_forwards_total", r#"target="delivery-1""#)
        + grew("delivery_forwards_total", r#"target="delivery-2""#);
    assert!(forwarded >= 30.0, "{forwarded} forwards");
    assert!(grew("delivery_redis_seconds_count", r#"op="routes""#) >= 1.0);
    assert!(grew("delivery_redis_seconds_count", r#"op="forward""#) >= 1.0);
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("delivery_send_queue_frames ")),
        "the send queue gauge is exported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_through_the_gateway_gets_the_full_message() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;
    let mut bob_socket = app.socket(&bob).await;

    app.send(&alice, &conversation, "hello through the gateway")
        .await;

    let frame = bob_socket.expect("message", SOON).await;
    let message = &frame["message"];
    assert_eq!(message["conversation_id"], conversation.as_str());
    assert_eq!(message["seq"], 1);
    assert_eq!(message["sender_id"], alice.user_id.as_str());
    assert_eq!(message["body"], "hello through the gateway");
    assert!(message["id"].is_string() && message["client_msg_id"].is_string());
    assert!(message["created_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_exactly_the_missed_messages_then_continues_live() {
    let app = TestApp::builder().delivery_replicas(2).spawn().await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;

    // Bob sees 1 and 2, then goes offline.
    let mut bob_socket = app.socket_to(0, &bob).await;
    app.send(&alice, &conversation, "one").await;
    app.send(&alice, &conversation, "two").await;
    assert_eq!(bob_socket.seqs_until(&conversation, 2, SOON).await, [1, 2]);
    drop(bob_socket);

    for i in 3..=7 {
        app.send(&alice, &conversation, &format!("missed {i}"))
            .await;
    }

    // He comes back on the other replica and resumes from what he has.
    let mut bob_socket = app.socket_to(1, &bob).await;
    bob_socket
        .send(&json!({"type": "resume", "cursors": {conversation.clone(): 2}}))
        .await;
    assert_eq!(
        bob_socket.seqs_until(&conversation, 7, SOON).await,
        [3, 4, 5, 6, 7]
    );
    let resumed = bob_socket.expect("resumed", SOON).await;
    assert_eq!(resumed["conversation_id"], conversation.as_str());
    assert_eq!(resumed["last_seq"], 7);

    app.send(&alice, &conversation, "live again").await;
    assert_eq!(bob_socket.seqs_until(&conversation, 8, SOON).await, [8]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_messages_during_a_replay_come_after_it_without_gaps() {
    let app = TestApp::builder()
        .delivery_replicas(1)
        .gateway(|o| o.user_burst = 10_000)
        .spawn()
        .await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;
    for i in 1..=250 {
        app.send(&alice, &conversation, &format!("backlog {i}"))
            .await;
    }
    let mut bob_socket = app.socket_to(0, &bob).await;
    bob_socket
        .send(&json!({"type": "resume", "cursors": {conversation.clone(): 0}}))
        .await;
    // Live sends race the replay (which takes two history pages).
    let sender = {
        let (base, token, conversation) = (
            app.base.clone(),
            alice.access_token.clone(),
            conversation.clone(),
        );
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..20 {
                let sent = http
                    .post(format!("{base}/v1/conversations/{conversation}/messages"))
                    .bearer_auth(&token)
                    .json(&json!({"client_msg_id": format!("live-{i}"), "body": "live"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(sent.status(), 201);
            }
        })
    };
    let seqs = bob_socket.seqs_until(&conversation, 270, SOON).await;
    sender.await.unwrap();
    assert_eq!(
        seqs,
        (1..=270).collect::<Vec<i64>>(),
        "in order, no gaps, no repeats"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_reaches_every_member_on_every_replica() {
    let app = TestApp::builder().delivery_replicas(2).spawn().await;
    let mut members = Vec::new();
    for _ in 0..6 {
        members.push(app.member().await);
    }
    let refs: Vec<&_> = members.iter().collect();
    let conversation = app.group(&refs).await;
    let mut sockets = Vec::new();
    for (i, member) in members.iter().enumerate() {
        sockets.push(app.socket_to(i % 2, member).await);
    }
    for sender in &members[1..=5] {
        app.send(sender, &conversation, "to everyone").await;
    }
    for socket in &mut sockets {
        assert_eq!(
            socket.seqs_until(&conversation, 5, SOON).await,
            [1, 2, 3, 4, 5]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_later_gets_messages_from_then_on_and_a_removed_one_stops() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let (alice, bob, carol) = (app.member().await, app.member().await, app.member().await);
    let conversation = app.group(&[&alice, &bob]).await;
    let mut carol_socket = app.socket_to(0, &carol).await;
    let mut bob_socket = app.socket_to(0, &bob).await;
    app.send(&alice, &conversation, "before carol").await;

    let added = app
        .post_as(
            &alice.access_token,
            &format!("/v1/conversations/{conversation}/members"),
            &json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(added.status(), 200);
    app.send(&alice, &conversation, "carol is here").await;
    assert_eq!(carol_socket.seqs_until(&conversation, 2, SOON).await, [2]);

    let removed = app
        .delete_as(
            &alice.access_token,
            &format!("/v1/conversations/{conversation}/members/{}", bob.user_id),
        )
        .await;
    assert_eq!(removed.status(), 204);
    app.send(&alice, &conversation, "bob is gone").await;
    assert_eq!(carol_socket.seqs_until(&conversation, 3, SOON).await, [3]);
    assert_eq!(bob_socket.seqs_until(&conversation, 2, SOON).await, [1, 2]);
    // Nothing of seq 3 reaches bob.
    while let Some(frame) = bob_socket.next(std::time::Duration::from_secs(2)).await {
        if let test_support::ws::Frame::Json(frame) = frame {
            assert_ne!(frame["message"]["seq"], 3, "a removed member got a message");
        }
    }
}
