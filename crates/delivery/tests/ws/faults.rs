//! Faults: poison events, slow readers, Redis going away, replicas stopping and crashing.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use test_support::{
    RedisServer, Session, TestApp,
    kafka::{produce_raw, read_dlq},
    ws::{Frame, Socket},
};

use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::SOON;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_goes_to_the_dlq_without_blocking_its_partition() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;
    let mut bob_socket = app.socket_to(0, &bob).await;

    // Same key, so the same partition as the conversation's messages, right before them.
    produce_raw(
        &app.kafka,
        realchat_events::Topic::Messages,
        &conversation,
        b"\xffnot protobuf",
    )
    .await;
    let bad_event = realchat_proto::events::v1::Envelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: "message.created".into(),
        payload: Some(
            realchat_proto::events::v1::envelope::Payload::MessageCreated(
                realchat_proto::events::v1::MessageCreated {
                    conversation_id: "not-a-uuid".into(),
                    seq: 1,
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    };
    use prost::Message as _;
    produce_raw(
        &app.kafka,
        realchat_events::Topic::Messages,
        &conversation,
        &bad_event.encode_to_vec(),
    )
    .await;
    app.send(&alice, &conversation, "after the poison").await;

    assert_eq!(bob_socket.seqs_until(&conversation, 1, SOON).await, [1]);
    let dead = read_dlq(&app.kafka, realchat_events::Topic::Messages, 2, SOON).await;
    assert_eq!(dead.len(), 2, "both poison events are parked");
    assert!(
        dead.iter()
            .all(|r| r.key.as_deref() == Some(conversation.as_str()))
    );
    assert!(
        dead.iter()
            .any(|r| r.header("dlq-error").unwrap().contains("not a UUID"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_cut_off_while_the_others_keep_their_latency() {
    let app = TestApp::builder()
        .delivery_replicas(1)
        // Room for a batch the consumer hands over at once (a relay round under load carries
        // dozens): a reader that keeps up must never overflow, one that stopped reading must.
        .delivery(|o| o.send_queue = 128)
        .gateway(|o| o.user_burst = 10_000)
        .spawn()
        .await;
    let (alice, fast, slow) = (app.member().await, app.member().await, app.member().await);
    let conversation = app.group(&[&alice, &fast, &slow]).await;
    let mut fast_socket = app.socket_to(0, &fast).await;
    // The slow reader connects with a small receive buffer and then never reads: the kernel
    // buffers fill, then its queue.
    let slow_socket = {
        let tcp = tokio::net::TcpSocket::new_v4().unwrap();
        tcp.set_recv_buffer_size(4096).unwrap();
        let stream = tcp.connect(app.delivery[0].addr).await.unwrap();
        let mut request = format!("ws://{}/v1/ws", app.delivery[0].addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", slow.access_token).parse().unwrap(),
        );
        tokio_tungstenite::client_async(request, stream)
            .await
            .unwrap()
            .0
    };

    let body = "x".repeat(3_900);
    let mut sent_at = HashMap::new();
    let mut latencies = Vec::new();
    let total = 600;
    let mut next_seq = 1;
    for _ in 0..total {
        let started = Instant::now();
        let seq = app.send(&alice, &conversation, &body).await;
        sent_at.insert(seq, started);
        // Read what has arrived so far, so the fast reader really is fast.
        while let Some(Frame::Json(frame)) = fast_socket.next(Duration::from_millis(1)).await {
            if frame["type"] == "message" {
                let seq = frame["message"]["seq"].as_i64().unwrap();
                assert_eq!(seq, next_seq, "in order, no gaps");
                next_seq += 1;
                latencies.push(sent_at[&seq].elapsed());
            }
        }
    }
    while next_seq <= total {
        let seqs = fast_socket.seqs_until(&conversation, next_seq, SOON).await;
        for seq in seqs {
            assert_eq!(seq, next_seq);
            latencies.push(sent_at[&seq].elapsed());
            next_seq += 1;
        }
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "fast reader: {} messages, p50 {:?}, p99 {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        p99
    );
    assert!(
        p99 < Duration::from_secs(1),
        "the fast reader's p99 was {p99:?}"
    );

    let metrics = app.delivery[0].metrics(&app.http).await;
    assert!(
        test_support::counter_value(&metrics, "delivery_sessions_closed_total", "slow_reader")
            >= 1.0,
        "the slow reader was not cut off"
    );
    drop(slow_socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_sockets_stay_open_sends_succeed_and_everything_arrives_after() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::builder()
        .delivery_replicas(2)
        .delivery_redis(redis.url())
        .spawn()
        .await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;
    let mut alice_socket = app.socket_to(0, &alice).await;
    let mut bob_socket = app.socket_to(1, &bob).await;
    app.send(&alice, &conversation, "before").await;
    assert_eq!(bob_socket.seqs_until(&conversation, 1, SOON).await, [1]);

    redis.stop();
    for i in 2..=6 {
        app.send(&alice, &conversation, &format!("during {i}"))
            .await;
    }
    // The sockets are still open and answer (what arrives before the pong is kept).
    let mut early = [Vec::new(), Vec::new()];
    for (socket, seqs) in [&mut alice_socket, &mut bob_socket]
        .into_iter()
        .zip(&mut early)
    {
        socket.send(&json!({"type": "ping"})).await;
        loop {
            match socket.next(SOON).await {
                Some(Frame::Json(frame)) if frame["type"] == "pong" => break,
                Some(Frame::Json(frame)) if frame["type"] == "message" => {
                    seqs.push(frame["message"]["seq"].as_i64().unwrap());
                }
                Some(Frame::Json(_)) => {}
                other => panic!("no pong while Redis is down: {other:?}"),
            }
        }
    }
    let [mut to_alice, mut to_bob] = early;

    redis.resume().await;
    app.send(&alice, &conversation, "after").await;
    to_bob.extend(bob_socket.seqs_until(&conversation, 7, SOON).await);
    to_alice.extend(alice_socket.seqs_until(&conversation, 7, SOON).await);
    assert_eq!(dedup(&to_bob), (2..=7).collect::<Vec<_>>(), "{to_bob:?}");
    assert_eq!(
        dedup(&to_alice),
        (1..=7).collect::<Vec<_>>(),
        "{to_alice:?}"
    );

    // Routing and presence came back by themselves: a new socket gets live messages and shows up.
    let carol = app.member().await;
    let group = app.group(&[&alice, &carol]).await;
    let mut carol_socket = app.socket_to(1, &carol).await;
    app.send(&alice, &group, "hi carol").await;
    assert_eq!(carol_socket.seqs_until(&group, 1, SOON).await, [1]);
    test_support::eventually("carol to be online", SOON, || async {
        let response = app
            .get(
                &format!("/v1/presence?user_ids={}", carol.user_id),
                Some(&alice.access_token),
            )
            .await;
        let body: serde_json::Value = response.json().await.ok()?;
        (body["presence"][0]["status"] == "online").then_some(())
    })
    .await;
}

/// The seqs after dropping repeats of what was already seen (what a client's dedup keeps).
fn dedup(seqs: &[i64]) -> Vec<i64> {
    let mut highest = 0;
    let mut kept = Vec::new();
    for &seq in seqs {
        if seq > highest {
            kept.push(seq);
            highest = seq;
        }
    }
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_socket_with_1001_after_the_consumer_committed() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;
    let mut bob_socket = app.socket_to(0, &bob).await;
    app.send(&alice, &conversation, "before the drain").await;
    assert_eq!(bob_socket.seqs_until(&conversation, 1, SOON).await, [1]);

    app.delivery[0].shutdown.trigger();
    assert_eq!(bob_socket.closed(SOON).await, 1001);
    let mut stopped = app.delivery[0].stopped.clone();
    tokio::time::timeout(SOON, stopped.wait_for(|done| *done))
        .await
        .expect("the replica drained in time")
        .unwrap();
}

/// A delivery replica as a process of its own, to kill.
struct Replica {
    child: Child,
    addr: String,
    admin: String,
}

impl Replica {
    fn spawn(app: &TestApp, prefix: &str, group: &str, name: &str) -> Self {
        let (port, admin) = (test_support::free_port(), test_support::free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_delivery"))
            .env("REALCHAT_DELIVERY_ADDR", format!("127.0.0.1:{port}"))
            .env("REALCHAT_DELIVERY_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
            .env("REALCHAT_DELIVERY_NODE_ID", name)
            .env(
                "REALCHAT_AUTH_ENDPOINT",
                format!("http://{}", app.auth_addr),
            )
            .env(
                "REALCHAT_MESSAGING_ENDPOINT",
                format!("http://{}", app.messaging_addr),
            )
            .envs(test_support::tls::internal_env("delivery"))
            .env("REALCHAT_REDIS_URL", test_support::redis_url())
            .env("REALCHAT_DELIVERY_REDIS_PREFIX", prefix)
            .env("REALCHAT_DELIVERY_CONSUMER_GROUP", group)
            .env("REALCHAT_DELIVERY_HEARTBEAT_SECS", "1")
            .env("REALCHAT_KAFKA_BROKERS", &app.kafka.brokers)
            .env("REALCHAT_KAFKA_TOPIC_PREFIX", &app.kafka.topic_prefix)
            .env(
                "REALCHAT_KAFKA_DEBUG",
                std::env::var("REALCHAT_TEST_KAFKA_DEBUG").unwrap_or_default(),
            )
            .env(
                "REALCHAT_LOG",
                std::env::var("REALCHAT_TEST_REPLICA_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // Quiet unless REALCHAT_TEST_REPLICA_LOG asks for more.
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self {
            child,
            addr: format!("127.0.0.1:{port}"),
            admin: format!("127.0.0.1:{admin}"),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client: its socket, where it is, and what it has.
struct Client {
    session: Session,
    conversation: String,
    socket: Option<Socket>,
    seen: Vec<i64>,
    /// Presence frames: (user, status).
    presence: Vec<(String, String)>,
}

impl Client {
    fn cursor(&self) -> i64 {
        self.seen.iter().copied().max().unwrap_or(0)
    }

    /// Reads what is there; false when the socket broke.
    async fn drain(&mut self) -> bool {
        let Some(socket) = self.socket.as_mut() else {
            return false;
        };
        loop {
            match socket.next(Duration::from_millis(1)).await {
                Some(Frame::Json(frame)) => {
                    if frame["type"] == "message"
                        && frame["message"]["conversation_id"] == self.conversation.as_str()
                    {
                        self.seen.push(frame["message"]["seq"].as_i64().unwrap());
                    }
                    if frame["type"] == "presence" {
                        self.presence.push((
                            frame["user_id"].as_str().unwrap().to_owned(),
                            frame["status"].as_str().unwrap().to_owned(),
                        ));
                    }
                }
                Some(Frame::Closed(_)) => {
                    self.socket = None;
                    return false;
                }
                None => return true,
            }
        }
    }

    async fn reconnect(&mut self, url: &str) {
        let mut socket = Socket::connect(url, &self.session.access_token).await;
        socket
            .send(&json!({"type": "resume", "cursors": {self.conversation.clone(): self.cursor()}}))
            .await;
        self.socket = Some(socket);
    }
}

async fn wait_ready(url: &str, token: &str) {
    test_support::eventually("a delivery process to accept sockets", SOON, || async {
        Socket::try_connect(url, Some(token)).await.ok().map(drop)
    })
    .await;
}

async fn claims(prefix: &str, user: &str) -> Vec<String> {
    let client = redis::Client::open(test_support::redis_url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("ZRANGE")
        .arg(format!("{prefix}routes:{user}"))
        .arg(0)
        .arg(-1)
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_loses_nothing_its_clients_resume_elsewhere_and_no_ghost_stays() {
    let app = TestApp::builder()
        .gateway(|o| {
            o.user_burst = 100_000;
            o.auth_ip_burst = 100_000;
        })
        .spawn()
        .await;
    let prefix = test_support::unique("rckill:") + ":";
    let group = test_support::unique("delivery-");
    let doomed = Replica::spawn(&app, &prefix, &group, "doomed");
    let survivor = Replica::spawn(&app, &prefix, &group, "survivor");

    // 100 clients in 50 pairs; in each pair one is on each replica.
    let mut clients = Vec::new();
    for _ in 0..50 {
        let (a, b) = (app.member().await, app.member().await);
        let conversation = app.direct(&a, &b).await;
        for session in [a, b] {
            clients.push(Client {
                session,
                conversation: conversation.clone(),
                socket: None,
                seen: Vec::new(),
                presence: Vec::new(),
            });
        }
    }
    wait_ready(&doomed.url(), &clients[0].session.access_token).await;
    wait_ready(&survivor.url(), &clients[0].session.access_token).await;
    for (i, client) in clients.iter_mut().enumerate() {
        let url = if i % 2 == 0 {
            doomed.url()
        } else {
            survivor.url()
        };
        client.reconnect(&url).await;
    }

    // Messages flow in every conversation; halfway, the doomed replica is SIGKILLed.
    let rounds = 8;
    let mut doomed = Some(doomed);
    for round in 1..=rounds {
        for pair in 0..50 {
            let sender = &clients[pair * 2 + round % 2].session;
            app.send(sender, &clients[pair * 2].conversation, "flowing")
                .await;
        }
        if round == rounds / 2 {
            // From here on, presence frames are the crash's.
            for client in clients.iter_mut() {
                client.drain().await;
                client.presence.clear();
            }
            drop(doomed.take());
        }
        for client in clients.iter_mut() {
            client.drain().await;
        }
    }

    // Everyone who lost their socket reconnects to the survivor and resumes, except client 0,
    // who stays away until their contact has seen them go offline.
    for (i, client) in clients.iter_mut().enumerate() {
        if client.socket.is_none() && i != 0 {
            client.reconnect(&survivor.url()).await;
        }
    }
    let away = clients[0].session.user_id.clone();
    let status_of_away = |client: &Client| {
        client
            .presence
            .iter()
            .filter(|(user, _)| *user == away)
            .map(|(_, status)| status.clone())
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + SOON;
    while Instant::now() < deadline && !status_of_away(&clients[1]).contains(&"offline".to_owned())
    {
        clients[1].drain().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status_of_away(&clients[1]),
        ["offline"],
        "the crashed replica's user went offline, and only that"
    );
    clients[0].socket = None;
    clients[0].reconnect(&survivor.url()).await;
    let deadline = Instant::now() + SOON;
    while Instant::now() < deadline && status_of_away(&clients[1]).len() < 2 {
        clients[1].drain().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_of_away(&clients[1]), ["offline", "online"]);

    // Everyone ends with every message of their conversation, in order.
    for (i, client) in clients.iter_mut().enumerate() {
        let socket = client.socket.as_mut().unwrap();
        let cursor = client.seen.iter().copied().max().unwrap_or(0);
        if cursor < rounds as i64 {
            let more = socket
                .seqs_until(&client.conversation, rounds as i64, SOON)
                .await;
            client.seen.extend(more);
        }
        assert_eq!(
            dedup(&client.seen),
            (1..=rounds as i64).collect::<Vec<_>>(),
            "client {i} ({}) saw {:?}",
            client.session.user_id,
            client.seen
        );
    }

    // No ghosts: the dead replica's claims are gone, everyone shows online, then offline when gone.
    for client in &clients {
        let user = client.session.user_id.clone();
        test_support::eventually("the dead replica's claims to be swept", SOON, || {
            let (prefix, user) = (prefix.clone(), user.clone());
            async move {
                let claims = claims(&prefix, &user).await;
                (claims.len() == 1 && claims[0].starts_with("survivor-")).then_some(())
            }
        })
        .await;
    }
    // The survivor swept up after the dead replica: client 0, at least, went offline by it.
    let survivor_metrics = app
        .http
        .get(format!("http://{}/metrics", survivor.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let swept = |name| test_support::counter_value(&survivor_metrics, name, "");
    assert!(swept("delivery_presence_sweeps_total") >= 1.0);
    assert!(swept("delivery_presence_swept_users_total") >= 1.0);
    // Presence is for contacts: the second of each pair asks about the pair.
    let pairs: Vec<(String, [String; 2])> = clients
        .chunks(2)
        .map(|pair| {
            (
                pair[1].session.access_token.clone(),
                [
                    pair[0].session.user_id.clone(),
                    pair[1].session.user_id.clone(),
                ],
            )
        })
        .collect();
    let statuses = |replica: String| {
        let (app, pairs) = (&app, pairs.clone());
        async move {
            let mut statuses = Vec::new();
            for (asker, pair) in &pairs {
                let ids = [pair[0].as_str(), pair[1].as_str()];
                statuses.extend(presence_of(app, &replica, asker, &ids).await);
            }
            statuses
        }
    };
    let online = statuses(survivor.addr.clone()).await;
    assert!(online.iter().all(|s| s == "online"), "{online:?}");
    for client in clients.iter_mut() {
        client.socket = None;
    }
    test_support::eventually("everyone to go offline", SOON, || {
        let statuses = statuses(survivor.addr.clone());
        async move {
            let statuses = statuses.await;
            statuses.iter().all(|s| s == "offline").then_some(())
        }
    })
    .await;
    drop(survivor);
}

/// Presence asked of a delivery replica directly.
async fn presence_of(app: &TestApp, replica: &str, token: &str, ids: &[&str]) -> Vec<String> {
    let response = app
        .http
        .get(format!(
            "http://{replica}/v1/presence?user_ids={}",
            ids.join(",")
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    body["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap().to_owned())
        .collect()
}

/// Two delivery replicas on a Redis of the test's own, and a direct chat whose members each have a
/// socket on one of them: whichever replica owns the conversation's partition, the other socket
/// gets the conversation's messages forwarded. Seq 1 has reached both.
struct Across {
    app: TestApp,
    alice: Session,
    bob: Session,
    conversation: String,
    alice_socket: Socket,
    bob_socket: Socket,
}

async fn chat_across_replicas(redis: &RedisServer, heartbeat_secs: u64) -> Across {
    let app = TestApp::builder()
        .delivery_replicas(2)
        .delivery_redis(redis.url())
        .delivery(move |o| o.heartbeat_secs = heartbeat_secs)
        .spawn()
        .await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;
    let mut alice_socket = app.socket_to(0, &alice).await;
    let mut bob_socket = app.socket_to(1, &bob).await;
    app.send(&alice, &conversation, "before").await;
    for socket in [&mut alice_socket, &mut bob_socket] {
        assert_eq!(socket.seqs_until(&conversation, 1, SOON).await, [1]);
    }
    Across {
        app,
        alice,
        bob,
        conversation,
        alice_socket,
        bob_socket,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_skipped_while_subscriptions_stay_up_are_repaired_by_a_resync() {
    let redis = RedisServer::start().await;
    let Across {
        app,
        alice,
        conversation,
        mut alice_socket,
        mut bob_socket,
        ..
    } = chat_across_replicas(&redis, 1).await;

    // Redis stalls for longer than the replicas' call timeout (500 ms), so the owner cannot look
    // up where the other socket is and skips the forward; but for less than the subscriptions'
    // ping timeout (2 s), so neither subscription drops (a dropped one resyncs by itself).
    // Nothing is sent afterwards, so no later message reveals the gap.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_500)
        .arg("ALL")
        .query_async(&mut connection)
        .await
        .unwrap();
    app.send(&alice, &conversation, "while Redis stalls").await;

    let repaired = Duration::from_secs(15);
    assert_eq!(
        alice_socket.seqs_until(&conversation, 2, repaired).await,
        [2]
    );
    assert_eq!(bob_socket.seqs_until(&conversation, 2, repaired).await, [2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_comes_back_empty_forwards_find_their_routes_before_the_next_heartbeat() {
    let mut redis = RedisServer::start().await;
    // No heartbeat comes to the rescue within this test.
    let Across {
        app,
        alice,
        bob,
        conversation,
        mut alice_socket,
        mut bob_socket,
    } = chat_across_replicas(&redis, 60).await;

    // Redis dies and comes back empty: every route claim is gone.
    redis.stop();
    app.send(&alice, &conversation, "while Redis is down").await;
    redis.resume().await;
    // Both replicas resubscribe and their sessions resync: the message sent meanwhile arrives.
    let repaired = Duration::from_secs(20);
    for socket in [&mut alice_socket, &mut bob_socket] {
        assert_eq!(
            *socket
                .seqs_until(&conversation, 2, repaired)
                .await
                .last()
                .unwrap(),
            2
        );
    }
    // Both replicas are back on Redis once both users are claimed again (each replica claims its
    // users before its sessions resync, through the connection it forwards with). Then the next
    // message must be forwarded at once, not after the next heartbeat re-claims the routes:
    // nothing later would reveal that it was missed.
    let client = redis::Client::open(redis.url()).unwrap();
    test_support::eventually("both users to be claimed again", SOON, || {
        let client = client.clone();
        let prefix = app.delivery_prefix.clone();
        let users = [alice.user_id.clone(), bob.user_id.clone()];
        async move {
            let mut connection = client.get_multiplexed_async_connection().await.ok()?;
            for user in users {
                let claims: Vec<String> = redis::cmd("ZRANGE")
                    .arg(format!("{prefix}routes:{user}"))
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut connection)
                    .await
                    .ok()?;
                if claims.is_empty() {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    app.send(&alice, &conversation, "after").await;
    for socket in [&mut alice_socket, &mut bob_socket] {
        assert_eq!(socket.seqs_until(&conversation, 3, SOON).await, [3]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_that_cannot_list_the_conversations_asks_the_client_to_resume() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::builder()
        .delivery_replicas(1)
        .delivery_redis(redis.url())
        .spawn()
        .await;
    let alice = app.member().await;
    let mut socket = app.socket_to(0, &alice).await;

    // Messaging's database is down when Redis comes back and the sessions resync: the session
    // cannot learn what it missed, so it must not carry on as if it had missed nothing.
    app.messaging_db.allow_connections(false).await;
    redis.stop();
    redis.resume().await;
    let code = socket.closed(Duration::from_secs(30)).await;
    app.messaging_db.allow_connections(true).await;
    assert_eq!(code, 1011, "closed so that the client resumes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_socket_that_cannot_list_the_conversations_is_refused_not_handed_messages_ahead() {
    let app = TestApp::builder().delivery_replicas(1).spawn().await;
    let alice = app.member().await;
    let url = format!("ws://{}/v1/ws", app.delivery[0].addr);

    // Without the list the socket does not know where each conversation stands: the next live
    // message would start its view ahead of what the client is owed, and the client's resume
    // would replay the rest after it. It must be closed, so the client reconnects and resumes.
    app.messaging_db.allow_connections(false).await;
    let mut socket = test_support::ws::Socket::try_connect(&url, Some(&alice.access_token))
        .await
        .unwrap();
    let code = socket.closed(Duration::from_secs(30)).await;
    app.messaging_db.allow_connections(true).await;
    assert_eq!(
        code, 1011,
        "closed so that the client reconnects and resumes"
    );

    // Once messaging answers again, sockets open as before.
    let mut socket = app.socket_to(0, &alice).await;
    socket.send(&serde_json::json!({"type": "ping"})).await;
    socket.expect("pong", SOON).await;
}
