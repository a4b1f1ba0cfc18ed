//! The send path's promises about Kafka, against real PostgreSQL and a real Kafka-protocol broker:
//! what was answered reaches the topic, in seq order per conversation, through broker outages,
//! relay crashes and a second replica; poison events park in the DLQ without blocking.

#![allow(clippy::unwrap_used)]

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use realchat_events::Topic;
use realchat_outbox::relay::{Relay, RelayOptions};
use realchat_proto::events::v1::envelope::Payload;
use serde_json::{Value, json};
use test_support::{
    KafkaServer, Session, TestApp, eventually,
    kafka::{Record, read, read_dlq},
};

/// Rows still waiting in messaging's outbox.
async fn backlog(app: &TestApp) -> i64 {
    let mut conn = app.messaging_db.connect().await;
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

async fn direct(app: &TestApp, a: &Session, b: &Session) -> String {
    let created: Value = app
        .post_as(
            &a.access_token,
            "/v1/conversations",
            &json!({"kind": "direct", "member_ids": [b.user_id]}),
        )
        .await
        .json()
        .await
        .unwrap();
    created["id"].as_str().unwrap().to_owned()
}

/// A system whose messaging runs no relay (the test plays the relays), and a direct conversation
/// in which the first of its two members sent `n` messages (`<prefix>0`, `<prefix>1`, …) of `body`.
async fn without_relay_after_sends(n: usize, prefix: &str, body: &str) -> (TestApp, String) {
    let app = TestApp::builder()
        .gateway(|o| o.rate_limits = false)
        .messaging(|o| o.relay = false)
        .spawn()
        .await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = direct(&app, &alice, &bob).await;
    for i in 0..n {
        let response = app
            .post_as(
                &alice.access_token,
                &format!("/v1/conversations/{conversation}/messages"),
                &json!({"client_msg_id": format!("{prefix}{i}"), "body": body}),
            )
            .await;
        assert_eq!(response.status(), 201);
    }
    (app, conversation)
}

/// The `message.created` events among `records`: per conversation, the seqs in the order of their
/// first appearance (duplicates allowed, they must carry the event id of the first), and how many
/// distinct events there were.
fn created_per_conversation(records: &[Record]) -> (HashMap<String, Vec<i64>>, usize) {
    let mut seen: HashMap<String, (String, i64)> = HashMap::new();
    let mut order: HashMap<String, Vec<i64>> = HashMap::new();
    for record in records {
        let envelope = record.envelope();
        assert_eq!(record.header("event-id"), Some(envelope.event_id.as_str()));
        assert_eq!(
            record.header("event-type"),
            Some(envelope.event_type.as_str())
        );
        let Some(Payload::MessageCreated(created)) = envelope.payload else {
            continue;
        };
        assert_eq!(
            record.key.as_deref(),
            Some(created.conversation_id.as_str()),
            "keyed by conversation"
        );
        let key = (created.conversation_id.clone(), created.seq);
        match seen.get(&envelope.event_id) {
            Some(first) => assert_eq!(first, &key, "a duplicate must be the same event"),
            None => {
                seen.insert(envelope.event_id.clone(), key);
                order
                    .entry(created.conversation_id)
                    .or_default()
                    .push(created.seq);
            }
        }
    }
    (order, seen.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_during_a_broker_outage_succeed_and_reach_kafka_in_order_when_it_returns() {
    let mut broker = KafkaServer::start().await;
    let kafka = test_support::kafka::fresh_topics_on(&broker.brokers()).await;
    let app = TestApp::builder()
        .kafka(kafka.clone())
        .gateway(|o| o.rate_limits = false)
        .spawn()
        .await;
    let (alice, bob, carol) = (app.member().await, app.member().await, app.member().await);
    let conversations = [
        direct(&app, &alice, &bob).await,
        direct(&app, &alice, &carol).await,
    ];

    broker.stop();
    let outage_started = tokio::time::Instant::now();
    let mut sent = 0;
    for i in 0..1000 {
        let conversation = &conversations[i % 2];
        let response = app
            .post_as(
                &alice.access_token,
                &format!("/v1/conversations/{conversation}/messages"),
                &json!({"client_msg_id": format!("m{i}"), "body": format!("during the outage {i}")}),
            )
            .await;
        assert_eq!(
            response.status(),
            201,
            "a send must succeed while Kafka is down"
        );
        sent += 1;
    }
    assert_eq!(sent, 1000);
    assert!(backlog(&app).await >= 1000, "the events wait in the outbox");
    // Keep the broker away longer than the producer's message timeout (10 s), so the relay sees
    // its messages fail and must keep the rows, not just wait for a reconnect.
    tokio::time::sleep_until(outage_started + Duration::from_secs(13)).await;

    broker.resume().await;
    eventually("the outbox to drain", Duration::from_secs(60), || async {
        (backlog(&app).await == 0).then_some(())
    })
    .await;

    let records = read(&kafka, Topic::Messages, 1000, Duration::from_secs(60)).await;
    let (order, distinct) = created_per_conversation(&records);
    assert_eq!(distinct, 1000);
    for conversation in &conversations {
        assert_eq!(
            order[conversation],
            (1..=500).collect::<Vec<i64>>(),
            "seq order in {conversation}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_commits_after_later_rows_were_published_is_still_published() {
    let app = TestApp::builder()
        .gateway(|o| o.rate_limits = false)
        .spawn()
        .await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = direct(&app, &alice, &bob).await;
    // A transaction that takes its outbox id now and commits only at the end of the test, as a
    // slow send of another conversation would.
    let mut slow = app.messaging_db.connect().await;
    sqlx::query("BEGIN").execute(&mut slow).await.unwrap();
    let late_id: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (topic, key, event_id, event_type, payload)
         VALUES ('messages', 'late-key', gen_random_uuid(), 'test.late', '\\x')
         RETURNING id",
    )
    .fetch_one(&mut slow)
    .await
    .unwrap();

    // Everything committed after it, with higher ids, is published while it is still open.
    for _ in 0..30 {
        app.send(&alice, &conversation, "published first").await;
    }
    eventually(
        "the committed rows to be published",
        Duration::from_secs(30),
        || async { (backlog(&app).await == 0).then_some(()) },
    )
    .await;
    sqlx::query("COMMIT").execute(&mut slow).await.unwrap();
    eventually(
        "the late row to be published too",
        Duration::from_secs(30),
        || async { (backlog(&app).await == 0).then_some(()) },
    )
    .await;
    let records = read(&app.kafka, Topic::Messages, 32, Duration::from_secs(30)).await;
    let late: Vec<&Record> = records
        .iter()
        .filter(|r| r.key.as_deref() == Some("late-key"))
        .collect();
    assert!(
        !late.is_empty(),
        "row {late_id} committed after later ids were published, and must reach the topic"
    );
    let created = records
        .iter()
        .filter(|r| r.header("event-type") == Some("message.created"))
        .count();
    assert!(created >= 30, "all 30 sends published, got {created}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_dies_between_publishing_and_deleting_loses_nothing() {
    let (app, conversation) = without_relay_after_sends(20, "c", "crash test").await;
    let waiting = backlog(&app).await;
    assert_eq!(
        waiting, 21,
        "one member.added (the conversation's creation) and twenty message.created events"
    );
    let pool = sqlx::PgPool::connect(app.messaging_db.url()).await.unwrap();
    let crashing = Relay::new(pool.clone(), &app.kafka, RelayOptions::default()).unwrap();

    let round = crashing.publish_once_then_crash().await.unwrap();

    assert_eq!((round.published, round.failed), (21, 0));
    assert_eq!(
        backlog(&app).await,
        21,
        "a crash before the delete leaves the rows"
    );
    // The next relay publishes them again, and deletes them.
    let stop = tokio_util::sync::CancellationToken::new();
    let next = Relay::new(pool, &app.kafka, RelayOptions::default()).unwrap();
    let running = tokio::spawn(next.run(stop.clone()));
    eventually(
        "the next relay to publish the rows",
        Duration::from_secs(30),
        || async { (backlog(&app).await == 0).then_some(()) },
    )
    .await;
    stop.cancel();
    running.await.unwrap().unwrap();
    let records = read(&app.kafka, Topic::Messages, 42, Duration::from_secs(30)).await;
    let created = records
        .iter()
        .filter(|r| r.header("event-type") == Some("message.created"))
        .count();
    assert_eq!(
        created, 40,
        "each event twice: once before the crash, once after"
    );
    let (order, distinct) = created_per_conversation(&records);
    assert_eq!(distinct, 20);
    assert_eq!(order[&conversation], (1..=20).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_every_conversation_reaches_kafka_in_seq_order() {
    let app = TestApp::builder()
        .gateway(|o| o.rate_limits = false)
        .spawn()
        .await;
    // A second messaging replica on the same database and topics: a second relay competing.
    let mut options = realchat_messaging::Options::new(app.messaging_db.url(), app.kafka.clone());
    options.consumer_group = test_support::unique("messaging-");
    options.internal_tls = test_support::tls::internal("messaging");
    let replica = realchat_messaging::Service::build(options).await.unwrap();
    let replica_shutdown = realchat_runtime::Shutdown::new(Duration::from_secs(5));
    tokio::spawn(replica.run(replica_shutdown.clone()));
    let alice = app.member().await;
    let mut conversations = Vec::new();
    for _ in 0..4 {
        let other = app.member().await;
        conversations.push(direct(&app, &alice, &other).await);
    }

    // Many concurrent senders across conversations: their transactions commit out of id order.
    let tasks: Vec<_> = (0..8)
        .map(|worker| {
            let (http, base, token, conversations) = (
                app.http.clone(),
                app.base.clone(),
                alice.access_token.clone(),
                conversations.clone(),
            );
            tokio::spawn(async move {
                for i in 0..50 {
                    let conversation = &conversations[(worker + i) % conversations.len()];
                    let response = http
                        .post(format!("{base}/v1/conversations/{conversation}/messages"))
                        .bearer_auth(&token)
                        .json(&json!({"client_msg_id": format!("w{worker}-{i}"), "body": "race"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 201);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    eventually("the outbox to drain", Duration::from_secs(30), || async {
        (backlog(&app).await == 0).then_some(())
    })
    .await;
    let records = read(&app.kafka, Topic::Messages, 400, Duration::from_secs(30)).await;
    let (order, distinct) = created_per_conversation(&records);
    assert_eq!(distinct, 400);
    for conversation in &conversations {
        let seqs = &order[conversation];
        assert_eq!(
            seqs,
            &(1..=seqs.len() as i64).collect::<Vec<_>>(),
            "seq order in {conversation}"
        );
    }
    replica_shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_on_the_users_topic_goes_to_the_dlq_and_the_events_behind_it_still_land() {
    let app = TestApp::spawn().await;
    // Warm up: the consumer group has joined once a registration gets through.
    app.member().await;

    test_support::kafka::produce_raw(
        &app.kafka,
        Topic::Users,
        "poison",
        b"\x00 definitely not protobuf",
    )
    .await;
    let bad_id = realchat_proto::events::v1::Envelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: "user.registered".into(),
        occurred_at_ms: 0,
        traceparent: String::new(),
        payload: Some(Payload::UserRegistered(
            realchat_proto::events::v1::UserRegistered {
                user_id: "not-a-uuid".into(),
                username: "broken".into(),
                registered_at_ms: 0,
            },
        )),
    };
    test_support::kafka::produce_raw(
        &app.kafka,
        Topic::Users,
        "bad-id",
        &prost::Message::encode_to_vec(&bad_id),
    )
    .await;
    // Registered after the poison, on whatever partition: it must still become known.
    let later = app.member().await;

    let parked = read_dlq(&app.kafka, Topic::Users, 2, Duration::from_secs(30)).await;
    let keys: HashSet<Option<&str>> = parked.iter().map(|r| r.key.as_deref()).collect();
    assert!(
        keys.contains(&Some("poison")) && keys.contains(&Some("bad-id")),
        "{parked:?}"
    );
    for record in &parked {
        assert!(record.header("dlq-error").is_some_and(|e| !e.is_empty()));
        assert_eq!(
            record.header("dlq-source-topic"),
            Some(app.kafka.topics().name(Topic::Users).as_str())
        );
        assert!(
            record
                .header("dlq-source-partition")
                .is_some_and(|p| p.parse::<i32>().is_ok())
        );
        assert!(
            record
                .header("dlq-source-offset")
                .is_some_and(|o| o.parse::<i64>().is_ok())
        );
    }
    assert!(!later.user_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_accepted_send_flushes_the_outbox_and_exits_0() {
    use realchat_proto::messaging::v1::{SendRequest, messaging_client::MessagingClient};

    // Arrange: a database with two known users and their conversation, and the real binary.
    let db = test_support::TestDatabase::new("messaging");
    realchat_messaging::migrate(db.url()).await.unwrap();
    let kafka = test_support::kafka::fresh_topics().await;
    let (alice, bob, conversation) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let mut conn = db.connect().await;
    sqlx::query("INSERT INTO known_users (id, username, registered_at) VALUES ($1, 'alice', now()), ($2, 'bob', now())")
        .bind(alice)
        .bind(bob)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO conversations (id, kind, created_by, direct_key) VALUES ($1, 'direct', $2, $3)")
        .bind(conversation)
        .bind(alice)
        .bind(format!("{alice}:{bob}"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO members (conversation_id, user_id) VALUES ($1, $2), ($1, $3)")
        .bind(conversation)
        .bind(alice)
        .bind(bob)
        .execute(&mut conn)
        .await
        .unwrap();
    let (grpc_port, admin_port) = (test_support::free_port(), test_support::free_port());
    let mut service = tokio::process::Command::new(env!("CARGO_BIN_EXE_messaging"))
        .env("REALCHAT_MESSAGING_DATABASE_URL", db.url())
        .env(
            "REALCHAT_MESSAGING_GRPC_ADDR",
            format!("127.0.0.1:{grpc_port}"),
        )
        .env(
            "REALCHAT_MESSAGING_ADMIN_ADDR",
            format!("127.0.0.1:{admin_port}"),
        )
        .env(
            "REALCHAT_MESSAGING_CONSUMER_GROUP",
            test_support::unique("messaging-"),
        )
        .env("REALCHAT_KAFKA_BROKERS", &kafka.brokers)
        .env("REALCHAT_KAFKA_TOPIC_PREFIX", &kafka.topic_prefix)
        .env("REALCHAT_SHUTDOWN_GRACE_SECS", "20")
        .env("REALCHAT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    eventually(
        "the messaging binary to be ready",
        Duration::from_secs(20),
        || {
            let request = http.get(format!("http://127.0.0.1:{admin_port}/readyz"));
            async move {
                request
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(drop)
            }
        },
    )
    .await;

    // Act: a burst of sends with SIGTERM in the middle of it.
    let client = MessagingClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .unwrap();
    let sends: Vec<_> = (0..200u64)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 2)).await;
                client
                    .send(SendRequest {
                        caller_id: alice.to_string(),
                        conversation_id: conversation.to_string(),
                        client_msg_id: format!("burst-{i}"),
                        body: "during shutdown".into(),
                    })
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = service.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut answered = HashSet::new();
    let mut refused = 0;
    for send in sends {
        match send.await.unwrap() {
            Ok(response) => {
                answered.insert(response.into_inner().message.unwrap().seq);
            }
            // Refused or never sent: the server had stopped taking calls (GOAWAY). Whether any of
            // these had in fact been committed is checked below against the database.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Cancelled
                ) || realchat_runtime::grpc::refused_by_shutdown(&status) =>
            {
                refused += 1
            }
            Err(status) => panic!("an accepted send failed: {status:?}"),
        }
    }
    let exit = tokio::time::timeout(Duration::from_secs(25), service.wait())
        .await
        .expect("the service must exit within its grace period")
        .unwrap();

    eprintln!("{} sends answered, {refused} refused", answered.len());
    // Assert: a clean exit, every stored message was answered, and the relay flushed them all.
    assert!(exit.success(), "exit status {exit}");
    assert!(
        !answered.is_empty() && refused > 0,
        "the burst should straddle the signal: {} answered, {refused} refused",
        answered.len()
    );
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq")
            .bind(conversation)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        stored,
        (1..=answered.len() as i64).collect::<Vec<_>>(),
        "stored and answered must match"
    );
    // The relay flushes before exiting, within its flush budget; on a loaded machine part of the
    // backlog may be left for the next relay. Either way nothing is lost and what was published
    // is in order.
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    eprintln!("{} events left in the outbox at exit", left.len());
    let published = answered.len() - left.len();
    let records = read(&kafka, Topic::Messages, published, Duration::from_secs(30)).await;
    let (order, distinct) = created_per_conversation(&records);
    assert_eq!(
        distinct, published,
        "published and left behind must add up to what was answered"
    );
    if published > 0 {
        assert_eq!(
            order[&conversation.to_string()],
            stored[..published].to_vec()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_record_headers_publishes_bare_records_with_the_whole_envelope() {
    let (app, conversation) = without_relay_after_sends(5, "h", "no headers").await;
    let pool = sqlx::PgPool::connect(app.messaging_db.url()).await.unwrap();
    let kafka = realchat_events::KafkaOptions {
        record_headers: false,
        ..app.kafka.clone()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let relay = Relay::new(pool, &kafka, RelayOptions::default()).unwrap();
    let running = tokio::spawn(relay.run(stop.clone()));
    eventually("the relay to publish", Duration::from_secs(30), || async {
        (backlog(&app).await == 0).then_some(())
    })
    .await;
    stop.cancel();
    running.await.unwrap().unwrap();

    let records = read(&app.kafka, Topic::Messages, 6, Duration::from_secs(30)).await;
    assert!(
        records.iter().all(|r| r.headers.is_empty()),
        "no record carries headers"
    );
    let created: Vec<(String, i64, String)> = records
        .iter()
        .filter_map(|r| {
            let envelope = r.envelope();
            match envelope.payload {
                Some(Payload::MessageCreated(m)) => {
                    assert_eq!(envelope.event_type, "message.created");
                    assert!(!envelope.event_id.is_empty(), "the envelope keeps its id");
                    Some((m.conversation_id, m.seq, m.body))
                }
                _ => None,
            }
        })
        .collect();
    assert_eq!(
        created,
        (1..=5)
            .map(|seq| (conversation.clone(), seq, "no headers".to_owned()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_producer_refuses_holds_back_only_its_own_key_and_keeps_its_order() {
    let (app, conversation) = without_relay_after_sends(3, "r", "others flow").await;
    let mut conn = app.messaging_db.connect().await;
    // A row for a topic this relay does not know (as written by a newer version during a rolling
    // upgrade), then a row of the same key behind it.
    for topic in ["messages_v9", "messages"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO outbox (topic, key, event_id, event_type, payload)
             VALUES ('{topic}', 'held-key', gen_random_uuid(), 'test.held', '\\x')"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let pool = sqlx::PgPool::connect(app.messaging_db.url()).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let relay = Relay::new(pool, &app.kafka, RelayOptions::default()).unwrap();
    let running = tokio::spawn(relay.run(stop.clone()));

    // Everything else is published at once, without the backoff of a failing round.
    let records = read(&app.kafka, Topic::Messages, 4, Duration::from_secs(10)).await;
    let (order, _) = created_per_conversation(&records);
    assert_eq!(order[&conversation], [1, 2, 3]);
    // The held key's rows stay, both: the second must not overtake the first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left: Vec<String> = sqlx::query_scalar("SELECT topic FROM outbox ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, ["messages_v9", "messages"]);
    let again = read(&app.kafka, Topic::Messages, 5, Duration::from_secs(2)).await;
    assert!(
        again.iter().all(|r| r.key.as_deref() != Some("held-key")),
        "nothing of the held key was published"
    );
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// The outbox table's shape in a database: each column with its type, and how `payload` is
/// stored (`e`: out of line, uncompressed).
async fn outbox_shape(db: &test_support::TestDatabase) -> (Vec<(String, String)>, String) {
    let mut conn = db.connect().await;
    let columns = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_name = 'outbox' ORDER BY ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let storage: i8 = sqlx::query_scalar(
        "SELECT attstorage FROM pg_attribute WHERE attrelid = 'outbox'::regclass AND attname = 'payload'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    (columns, char::from(storage as u8).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_database_that_publishes_has_the_outbox_crates_table() {
    let messaging = test_support::TestDatabase::new("messaging");
    realchat_messaging::migrate(messaging.url()).await.unwrap();
    let (columns, storage) = outbox_shape(&messaging).await;
    assert_eq!(columns.len(), 8, "{columns:?}");
    assert_eq!(storage, "e");

    // Auth's database, new: the same table.
    let auth = test_support::TestDatabase::new("auth");
    realchat_auth::migrate(auth.url()).await.unwrap();
    assert_eq!(outbox_shape(&auth).await, (columns.clone(), "e".into()));

    // Auth's database as it was before the outbox crate owned the table (auth's own migrations
    // only, payload compressed): migrating brings it to the same shape, and again is a no-op.
    let older = test_support::TestDatabase::new("auth");
    realchat_runtime::db::migrate(older.url(), &[&realchat_auth::MIGRATOR])
        .await
        .unwrap();
    assert_eq!(outbox_shape(&older).await.1, "x");
    for _ in 0..2 {
        realchat_auth::migrate(older.url()).await.unwrap();
        assert_eq!(outbox_shape(&older).await, (columns.clone(), "e".into()));
    }
}
