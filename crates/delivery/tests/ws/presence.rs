//! Presence, typing notices and read receipts.

use std::time::Duration;

use serde_json::{Value, json};
use test_support::{TestApp, ws::Frame};

use crate::SOON;

async fn status_of(app: &TestApp, asker: &test_support::Session, user: &str) -> Value {
    let response = app
        .get(
            &format!("/v1/presence?user_ids={user}"),
            Some(&asker.access_token),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["presence"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_sockets_and_contacts_hear_of_it() {
    let app = TestApp::builder().delivery_replicas(2).spawn().await;
    let (alice, bob) = (app.member().await, app.member().await);
    app.direct(&alice, &bob).await;
    let never = uuid::Uuid::new_v4();

    let offline = status_of(&app, &alice, &bob.user_id).await;
    assert_eq!(offline["status"], "offline");
    assert_eq!(offline["last_seen"], Value::Null);

    let mut alice_socket = app.socket_to(0, &alice).await;
    let bob_socket = app.socket_to(1, &bob).await;
    let online = alice_socket.expect("presence", SOON).await;
    assert_eq!(
        online,
        json!({"type": "presence", "user_id": bob.user_id, "status": "online"})
    );
    assert_eq!(
        status_of(&app, &alice, &bob.user_id).await["status"],
        "online"
    );

    drop(bob_socket);
    let gone = alice_socket.expect("presence", SOON).await;
    assert_eq!(
        gone,
        json!({"type": "presence", "user_id": bob.user_id, "status": "offline"})
    );
    let after = status_of(&app, &alice, &bob.user_id).await;
    assert_eq!(after["status"], "offline");
    assert!(after["last_seen"].as_str().unwrap().ends_with('Z'));

    let response = app
        .get(
            &format!("/v1/presence?user_ids={},{never}", alice.user_id),
            Some(&alice.access_token),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["presence"][0]["status"], "online");
    assert_eq!(body["presence"][1]["user_id"], never.to_string());
    assert_eq!(body["presence"][1]["status"], "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_queries_are_checked() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let user = app.signed_up().await;
    assert_eq!(app.get("/v1/presence?user_ids=x", None).await.status(), 401);
    for query in ["", "?user_ids=", "?user_ids=not-a-uuid"] {
        let response = app
            .get(&format!("/v1/presence{query}"), Some(&user.access_token))
            .await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_argument");
    }
    let many: Vec<String> = (0..101).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let response = app
        .get(
            &format!("/v1/presence?user_ids={}", many.join(",")),
            Some(&user.access_token),
        )
        .await;
    assert_eq!(response.status(), 400);
}

/// Presence is for the people a user talks to: someone who shares no conversation with the
/// asker reads as a user never seen, online or not, until they share one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_answers_only_for_users_who_share_a_conversation() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let (alice, bob, stranger) = (app.member().await, app.member().await, app.member().await);
    app.direct(&alice, &bob).await;
    let _bob_socket = app.socket_to(0, &bob).await;
    let _stranger_socket = app.socket_to(0, &stranger).await;

    let seen = |who: &test_support::Session| {
        let (alice, user) = (alice.clone(), who.user_id.clone());
        let app = &app;
        async move { status_of(app, &alice, &user).await }
    };
    test_support::eventually("bob to be online", SOON, || async {
        (seen(&bob).await["status"] == "online").then_some(())
    })
    .await;
    let hidden = seen(&stranger).await;
    assert_eq!(hidden["status"], "offline", "{hidden}");
    assert_eq!(hidden["last_seen"], Value::Null);

    // Once they share a conversation, the stranger's status is alice's to see.
    app.direct(&alice, &stranger).await;
    assert_eq!(seen(&stranger).await["status"], "online");
}

/// The gateway passes presence requests to delivery over kept-alive connections: twenty
/// questions, one after another, open one or two connections, not twenty (each with a
/// handshake and a socket left in TIME-WAIT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reuses_its_connections_to_delivery_for_presence() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let app = TestApp::builder()
        .delivery_replicas(1)
        .gateway(move |o| {
            // Between the gateway and the replica: a relay that counts the connections.
            let replica = o.delivery_endpoints[0]
                .split_once("://")
                .map_or(o.delivery_endpoints[0].clone(), |(_, rest)| rest.to_owned());
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            o.delivery_endpoints = vec![format!("ws://{}", listener.local_addr().unwrap())];
            tokio::spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((mut inbound, _)) = listener.accept().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let replica = replica.clone();
                    tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(replica).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            });
        })
        .spawn()
        .await;
    let (alice, bob) = (app.member().await, app.member().await);
    let before = accepted.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(
            status_of(&app, &alice, &bob.user_id).await["status"],
            "offline"
        );
    }
    let opened = accepted.load(Ordering::SeqCst) - before;
    assert!(opened <= 2, "{opened} connections for 20 presence requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_other_members_only() {
    let app = TestApp::builder().delivery_replicas(2).spawn().await;
    let (alice, bob, carol) = (app.member().await, app.member().await, app.member().await);
    let conversation = app.group(&[&alice, &bob, &carol]).await;
    let mut alice_socket = app.socket_to(0, &alice).await;
    let mut bob_socket = app.socket_to(1, &bob).await;
    let mut carol_socket = app.socket_to(0, &carol).await;

    alice_socket
        .send(&json!({"type": "typing", "conversation_id": conversation}))
        .await;
    for socket in [&mut bob_socket, &mut carol_socket] {
        let typing = socket.expect("typing", SOON).await;
        assert_eq!(
            typing,
            json!({"type": "typing", "conversation_id": conversation, "user_id": alice.user_id})
        );
    }
    // The typist does not hear themself.
    while let Some(frame) = alice_socket.next(Duration::from_secs(1)).await {
        if let Frame::Json(frame) = frame {
            assert_ne!(frame["type"], "typing");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipts_reach_the_other_members() {
    let app = TestApp::builder().delivery_replicas(2).spawn().await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;
    let mut alice_socket = app.socket_to(0, &alice).await;
    app.send(&alice, &conversation, "did you read this?").await;

    let read = app
        .post_as(
            &bob.access_token,
            &format!("/v1/conversations/{conversation}/read"),
            &json!({"seq": 1}),
        )
        .await;
    assert_eq!(read.status(), 204);
    let receipt = alice_socket.expect("read", SOON).await;
    assert_eq!(
        receipt,
        json!({"type": "read", "conversation_id": conversation, "user_id": bob.user_id, "seq": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_direct_contacts_and_small_groups_but_not_big_ones() {
    let app = TestApp::builder()
        .delivery_replicas(2)
        .delivery(|o| o.presence_max_members = 3)
        .spawn()
        .await;
    let (alice, bob, carol, dave) = (
        app.member().await,
        app.member().await,
        app.member().await,
        app.member().await,
    );
    // Carol shares only a group of 4 with Alice; Bob a direct conversation and that group.
    app.direct(&alice, &bob).await;
    app.group(&[&alice, &bob, &carol, &dave]).await;
    let mut alice_socket = app.socket_to(0, &alice).await;

    let carol_socket = app.socket_to(1, &carol).await;
    let bob_socket = app.socket_to(1, &bob).await;
    let online = alice_socket.expect("presence", SOON).await;
    assert_eq!(
        online,
        json!({"type": "presence", "user_id": bob.user_id, "status": "online"}),
        "the first presence frame is Bob's: Carol's group is over the limit"
    );
    drop(carol_socket);
    drop(bob_socket);
    let offline = alice_socket.expect("presence", SOON).await;
    assert_eq!(offline["user_id"], bob.user_id);
    assert_eq!(offline["status"], "offline");
    while let Some(frame) = alice_socket.next(Duration::from_secs(1)).await {
        if let Frame::Json(frame) = frame {
            assert_ne!(frame["type"], "presence", "{frame}");
        }
    }
    // Carol's presence is still there to ask for.
    assert_eq!(
        status_of(&app, &alice, &carol.user_id).await["status"],
        "offline"
    );
}
