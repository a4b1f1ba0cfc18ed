//! TLS to managed infrastructure: Redis with TLS and an AUTH password (ElastiCache with
//! in-transit encryption), and a broker reached only through TLS (MSK's TLS listener), with the
//! certificates of a CA the test made.

use realchat_events::{
    KafkaOptions,
    kafka::{SaslMechanism, SecurityProtocol},
};
use realchat_runtime::config::Secret;
use redis::AsyncCommands as _;
use test_support::{KafkaServer, RedisServer, TestApp, tls::TestCa};

use crate::SOON;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_presence_forwarding_and_rate_limits_work_over_tls_redis() {
    let dir = std::env::temp_dir().join(test_support::unique("realchat-redis-tls-"));
    let ca = TestCa::new(&dir, "redis");
    let redis = RedisServer::start_tls(&ca, &ca.issue("redis"), "t0ken-for-tests").await;
    assert!(redis.url().starts_with("rediss://"));
    let (for_delivery, for_gateway) = (redis.options(), redis.options());
    let app = TestApp::builder()
        .delivery_replicas(2)
        .delivery(move |o| o.redis = for_delivery.clone())
        .gateway(move |o| {
            o.redis = for_gateway.clone();
            o.user_rate = 0.2;
            o.user_burst = 10;
        })
        .spawn()
        .await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;

    // One socket on each replica: whichever consumes the conversation's partition forwards to
    // the other through Redis.
    let mut alice_socket = app.socket_to(0, &alice).await;
    let mut bob_socket = app.socket_to(1, &bob).await;
    let online = alice_socket.expect("presence", SOON).await;
    assert_eq!(online["user_id"], bob.user_id.as_str());
    assert_eq!(online["status"], "online");

    for body in ["one", "two", "three"] {
        app.send(&alice, &conversation, body).await;
    }
    assert_eq!(
        bob_socket.seqs_until(&conversation, 3, SOON).await,
        [1, 2, 3]
    );
    assert_eq!(
        alice_socket.seqs_until(&conversation, 3, SOON).await,
        [1, 2, 3]
    );

    // The routes live in the TLS Redis, not the shared one.
    let mut redis_connection = redis
        .options()
        .client()
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis_connection
        .keys(format!("{}*", app.delivery_prefix))
        .await
        .unwrap();
    assert!(
        keys.iter().any(|key| key.contains(&bob.user_id)),
        "no key of bob's under {}: {keys:?}",
        app.delivery_prefix
    );

    drop(bob_socket);
    let offline = alice_socket.expect("presence", SOON).await;
    assert_eq!(offline["status"], "offline");

    // The gateway's limiter fails open when it cannot reach Redis, so a 429 shows it did.
    let carol = app.signed_up().await;
    let mut statuses = Vec::new();
    for _ in 0..14 {
        let response = app.get("/v1/auth/me", Some(&carol.access_token)).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[..10], [200; 10], "{statuses:?}");
    assert!(statuses[10..].contains(&429), "{statuses:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_and_consumers_work_through_a_broker_reached_over_tls() {
    let dir = std::env::temp_dir().join(test_support::unique("realchat-kafka-tls-"));
    let ca = TestCa::new(&dir, "kafka");
    let broker = KafkaServer::start_behind_tls(&ca.issue("broker")).await;
    let mut options = KafkaOptions::new(broker.brokers(), "");
    options.security.protocol = SecurityProtocol::Ssl;
    options.security.ssl_ca_file = Some(ca.cert.clone());
    a_message_goes_through(options.clone()).await;

    // The same broker with a CA that did not sign its certificate: refused.
    let stranger = TestCa::new(&dir, "stranger");
    let mut untrusting = options;
    untrusting.security.ssl_ca_file = Some(stranger.cert.clone());
    assert_refused(untrusting, "a broker whose certificate the CA did not sign").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_and_consumers_work_through_a_broker_that_requires_a_scram_login() {
    let dir = std::env::temp_dir().join(test_support::unique("realchat-kafka-scram-"));
    let ca = TestCa::new(&dir, "kafka");
    let broker =
        KafkaServer::start_with_scram_behind_tls(&ca.issue("broker"), "realchat", "s3cret-pw")
            .await;

    // Without a login the broker answers nothing but the handshake: TLS alone is refused, so
    // what follows shows the services logged in.
    let mut tls_only = KafkaOptions::new(broker.brokers(), "");
    tls_only.security.protocol = SecurityProtocol::Ssl;
    tls_only.security.ssl_ca_file = Some(ca.cert.clone());
    assert_refused(tls_only.clone(), "a client that did not log in").await;

    // The password from a file, as a container platform mounts a secret.
    let password_file = dir.join("kafka-password");
    std::fs::write(&password_file, "s3cret-pw\n").unwrap();
    let mut options = tls_only;
    options.security.protocol = SecurityProtocol::SaslSsl;
    options.security.sasl_mechanism = SaslMechanism::ScramSha512;
    options.security.sasl_username = Some("realchat".into());
    options.security.sasl_password_file = Some(password_file);
    options.security = options.security.resolve().unwrap();
    a_message_goes_through(options.clone()).await;

    let mut wrong = options;
    wrong.security.sasl_password = Some(Secret::new("not-the-password".into()));
    assert_refused(wrong, "a wrong password").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Auth's relay publishes the registrations and messaging's consumer takes them in (`member`
/// waits for that); messaging's relay publishes a message and delivery's consumer hands it to
/// the socket: every kind of Kafka client, through `options`.
async fn a_message_goes_through(options: KafkaOptions) {
    let kafka = test_support::kafka::fresh_topics_with(options).await;
    let app = TestApp::builder()
        .kafka(kafka)
        .delivery_replicas(1)
        .spawn()
        .await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;
    let mut bob_socket = app.socket_to(0, &bob).await;
    app.send(&alice, &conversation, "secured").await;
    assert_eq!(bob_socket.seqs_until(&conversation, 1, SOON).await, [1]);
}

async fn assert_refused(mut options: KafkaOptions, what: &str) {
    options.topic_prefix = test_support::unique("t") + ".";
    assert!(
        options.ensure_topics().await.is_err(),
        "{what} must be refused"
    );
}
