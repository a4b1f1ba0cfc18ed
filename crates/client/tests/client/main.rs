//! The client against the real services: auth, messaging, profile, two delivery replicas and the
//! gateway in process, on PostgreSQL, Redis and the broker.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use realchat_client::{Client, Event, Message, ProfileEdit, Socket, TokenStore, Tokens};
use test_support::TestApp;

const SOON: Duration = Duration::from_secs(20);

/// A logged-in client whose user messaging already knows.
async fn user(app: &TestApp) -> Client {
    let session = app.member().await;
    let client = Client::new(&app.base);
    client
        .login(&session.username, &session.password)
        .await
        .unwrap();
    client
}

async fn next_message(socket: &mut Socket) -> Message {
    loop {
        match tokio::time::timeout(SOON, socket.next()).await {
            Ok(Some(Event::Message(message))) => return message,
            Ok(Some(Event::Gap { .. })) => panic!("the server skipped a seq"),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the socket ended"),
            Err(_) => panic!("no message within {SOON:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_and_a_socket_survives_its_replica_going_away() {
    let app = TestApp::builder()
        .profile()
        .delivery_replicas(2)
        .spawn()
        .await;
    let (alice, bob) = (user(&app).await, user(&app).await);
    let bob_id = bob.tokens().unwrap().user_id;
    let conversation = alice.open_direct(&bob_id).await.unwrap();

    let mut socket = Socket::connect(&bob).await.unwrap();
    socket.track(&conversation.id, 0).unwrap();
    let first = alice.send(&conversation.id, "one").await.unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(next_message(&mut socket).await, first);

    // Retrying with the same idempotency key returns the original.
    let again = alice
        .send_with_id(&conversation.id, &first.client_msg_id, "one")
        .await
        .unwrap();
    assert_eq!(again, first);

    // Both replicas drain (1001); the socket reconnects (the gateway picks a live one), resumes,
    // and hands out what was sent meanwhile exactly once and in order.
    for replica in &app.delivery {
        replica.shutdown.trigger();
    }
    for replica in &app.delivery {
        let mut stopped = replica.stopped.clone();
        tokio::time::timeout(SOON, stopped.wait_for(|done| *done))
            .await
            .unwrap()
            .unwrap();
    }
    for i in 2..=4 {
        alice
            .send(&conversation.id, &format!("while away {i}"))
            .await
            .unwrap();
    }
    let replica = test_support::DeliveryReplica::start({
        let mut options = realchat_delivery::Options::new(
            format!("http://{}", app.auth_addr),
            format!("http://{}", app.messaging_addr),
            app.delivery_redis.clone(),
            app.kafka.clone(),
        );
        options.addr = app.delivery[0].addr;
        options.redis_prefix = app.delivery_prefix.clone();
        options.consumer_group = test_support::unique("delivery-");
        options.internal_tls = test_support::tls::internal("delivery");
        options
    })
    .await;
    let seqs: Vec<i64> = {
        let mut seqs = Vec::new();
        for _ in 2..=4 {
            seqs.push(next_message(&mut socket).await.seq);
        }
        seqs
    };
    assert_eq!(seqs, [2, 3, 4]);
    drop(replica);

    // The REST side: profiles, lists, presence, reads.
    let profile = alice
        .edit_profile(&ProfileEdit {
            display_name: Some("Alice".into()),
            ..ProfileEdit::default()
        })
        .await;
    // The profile appears a moment after registration.
    let profile = match profile {
        Ok(profile) => profile,
        Err(_) => {
            test_support::eventually("alice's profile", SOON, || async {
                alice
                    .edit_profile(&ProfileEdit {
                        display_name: Some("Alice".into()),
                        ..ProfileEdit::default()
                    })
                    .await
                    .ok()
            })
            .await
        }
    };
    assert_eq!(profile.display_name, "Alice");
    let listed = bob.conversations().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|c| c.conversation.id == conversation.id && c.unread_count == 4)
    );
    bob.mark_read(&conversation.id, 4).await.unwrap();
    let history = bob.history_after(&conversation.id, 1, 10).await.unwrap();
    assert_eq!(history.iter().map(|m| m.seq).collect::<Vec<_>>(), [2, 3, 4]);
    let back = bob.history_before(&conversation.id, 4, 2).await.unwrap();
    assert_eq!(back.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 2]);
    assert_eq!(
        bob.conversation(&conversation.id).await.unwrap().last_seq,
        4
    );
    let error = bob.profile("not-a-user").await.unwrap_err();
    assert_eq!(error.code(), Some("not_found"));
    // A path segment is one segment, whatever is in it.
    let error = bob.conversation("../users/me").await.unwrap_err();
    assert!(
        matches!(error.code(), Some("not_found" | "invalid_argument")),
        "{error}"
    );
    assert!(matches!(
        socket.track("not-a-conversation", 0),
        Err(realchat_client::Error::Invalid(_))
    ));

    // Groups: add and remove members.
    let carol = user(&app).await;
    let carol_id = carol.tokens().unwrap().user_id;
    let group = alice.create_group(&[&bob_id], "three").await.unwrap();
    let grown = alice.add_member(&group.id, &carol_id).await.unwrap();
    assert!(grown.member_ids.contains(&carol_id));
    carol.remove_member(&group.id, &carol_id).await.unwrap();
    let error = carol.conversation(&group.id).await.unwrap_err();
    assert_eq!(error.code(), Some("not_found"));
}

/// Services whose access tokens live one second, and a client logged in to them: its username
/// and first pair.
async fn short_lived_login() -> (TestApp, Client, String, Tokens) {
    let app = TestApp::builder()
        .auth(|o| o.access_token_ttl_secs = 1)
        .gateway(|o| o.token_leeway_secs = 0)
        .spawn()
        .await;
    let client = Client::new(&app.base);
    let username = test_support::unique("c_");
    client
        .register(&username, "correct horse battery")
        .await
        .unwrap();
    let tokens = client
        .login(&username, "correct horse battery")
        .await
        .unwrap();
    (app, client, username, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_access_token_is_refreshed_once_and_the_request_repeated() {
    let (_app, client, username, first) = short_lived_login().await;
    let store = Shared::default();
    store.save(&first);
    client.keep_tokens_in(store.clone());
    let rotations = &store.saves;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Several requests find the token expired at once. A refresh token works once, and
    // presenting it twice revokes the login, so they must share one refresh.
    let answers = futures::future::join_all((0..6).map(|_| client.me())).await;
    for me in answers {
        assert_eq!(me.unwrap().username, username);
    }
    assert_eq!(rotations.load(Ordering::SeqCst), 2, "one refresh for all");
    assert_ne!(client.tokens().unwrap().refresh_token, first.refresh_token);
    // The login is still good: the next expiry is refreshed again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(client.me().await.unwrap().username, username);
    assert_eq!(rotations.load(Ordering::SeqCst), 3);
    assert_eq!(store.load(), client.tokens(), "the store has the live pair");
}

/// A token store two clients share, as two processes share a session file.
#[derive(Clone, Default)]
struct Shared {
    tokens: Arc<Mutex<Option<Tokens>>>,
    saves: Arc<AtomicUsize>,
}

impl TokenStore for Shared {
    fn load(&self) -> Option<Tokens> {
        self.tokens.lock().unwrap().clone()
    }

    fn save(&self, tokens: &Tokens) {
        *self.tokens.lock().unwrap() = Some(tokens.clone());
        self.saves.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_renewed_by_another_process_is_taken_from_the_store_not_renewed_again() {
    let (app, first, username, tokens) = short_lived_login().await;
    // Two processes on one saved login: both start from the same pair.
    let store = Shared::default();
    store.save(&tokens);
    first.keep_tokens_in(store.clone());
    let second = Client::with_tokens(&app.base, tokens.clone());
    second.keep_tokens_in(store.clone());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The first renews; the second, finding its token expired, must take the first's pair: its
    // own refresh token is spent, and presenting it would end the login for both.
    assert_eq!(first.me().await.unwrap().username, username);
    assert_eq!(second.me().await.unwrap().username, username);
    assert_eq!(
        store.saves.load(Ordering::SeqCst),
        2,
        "one refresh between them"
    );
    assert_eq!(second.tokens(), first.tokens());
    assert_eq!(first.me().await.unwrap().username, username);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_client_talks_https_and_its_socket_wss() {
    let dir = std::env::temp_dir().join(test_support::unique("realchat-client-tls-"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = test_support::self_signed_certificate(&dir);
    let app = TestApp::builder()
        .delivery_replicas(1)
        .gateway(move |o| {
            o.tls_cert = Some(cert);
            o.tls_key = Some(key);
        })
        .spawn()
        .await;
    let base = app.base.replacen("http://", "https://", 1);
    let pem = std::fs::read(dir.join("cert.pem")).unwrap();

    // Without the server's certificate among its roots, the client refuses the server.
    let stranger = Client::new(&base);
    let refused = stranger
        .register("tls_stranger", "correct horse battery")
        .await;
    assert!(
        matches!(refused, Err(realchat_client::Error::Transport(_))),
        "{refused:?}"
    );
    // The cause is kept, down to the certificate check that failed.
    let error = anyhow::Error::from(refused.unwrap_err());
    assert!(format!("{error:#}").contains("certificate"), "{error:#}");

    let mut clients = Vec::new();
    for name in ["alice", "bob"] {
        let client = Client::with_root_certificates(&base, &pem).unwrap();
        let username = test_support::unique(&format!("tls_{name}_"));
        client
            .register(&username, "correct horse battery")
            .await
            .unwrap();
        client
            .login(&username, "correct horse battery")
            .await
            .unwrap();
        clients.push(client);
    }
    let bob_id = clients[1].tokens().unwrap().user_id;
    let deadline = tokio::time::Instant::now() + SOON;
    let conversation = loop {
        match clients[0].open_direct(&bob_id).await {
            Ok(conversation) => break conversation,
            // Messaging learns of bob through the broker.
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(error) => panic!("{error}"),
        }
    };
    let mut socket = Socket::connect(&clients[1]).await.unwrap();
    socket.track(&conversation.id, 0).unwrap();
    clients[0].send(&conversation.id, "over TLS").await.unwrap();
    let message = next_message(&mut socket).await;
    assert_eq!((message.seq, message.body.as_str()), (1, "over TLS"));
    let _ = std::fs::remove_dir_all(&dir);
}
