//! The profile service against the real services: auth, messaging, profile and the gateway in
//! process, on PostgreSQL, Redis and the broker.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prost::Message as _;
use realchat_events::Topic;
use realchat_proto::events::v1::{Envelope, UserRegistered, envelope::Payload};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{Session, TestApp, kafka};

const SOON: Duration = Duration::from_secs(20);

async fn patch(app: &TestApp, session: &Session, body: &Value) -> reqwest::Response {
    app.http
        .patch(format!("{}/v1/users/me", app.base))
        .bearer_auth(&session.access_token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Waits for the session's profile to exist (it follows the registration event).
async fn profile_of(app: &TestApp, session: &Session) -> Value {
    test_support::eventually("the profile to be created", SOON, || async {
        let response = app.get("/v1/users/me", Some(&session.access_token)).await;
        if response.status() == StatusCode::OK {
            response.json::<Value>().await.ok()
        } else {
            None
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_appears_after_registration_and_its_owner_edits_it() {
    let app = TestApp::builder().profile().spawn().await;
    let alice = app.signed_up().await;

    let profile = profile_of(&app, &alice).await;
    assert_eq!(profile["user_id"], alice.user_id.as_str());
    assert_eq!(profile["username"], alice.username.as_str());
    assert_eq!(profile["display_name"], alice.username.as_str());
    assert_eq!(profile["bio"], Value::Null);
    assert_eq!(profile["avatar_url"], Value::Null);
    assert!(profile["updated_at"].as_str().unwrap().ends_with('Z'));

    let edited = patch(
        &app,
        &alice,
        &json!({"display_name": "Alice A.", "bio": "hello", "avatar_url": "https://img.example/a.png"}),
    )
    .await;
    assert_eq!(edited.status(), StatusCode::OK);
    let edited: Value = edited.json().await.unwrap();
    assert_eq!(edited["display_name"], "Alice A.");
    assert_eq!(edited["bio"], "hello");
    assert_eq!(edited["avatar_url"], "https://img.example/a.png");

    // Only what is given changes; null clears.
    let cleared: Value = patch(&app, &alice, &json!({"bio": null}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["bio"], Value::Null);
    assert_eq!(cleared["display_name"], "Alice A.");
    assert_eq!(cleared["avatar_url"], "https://img.example/a.png");

    // Others see it too.
    let bob = app.signed_up().await;
    let seen: Value = app
        .get(
            &format!("/v1/users/{}", alice.user_id),
            Some(&bob.access_token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen, cleared);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_malformed_ids_are_404_and_tokens_are_required() {
    let app = TestApp::builder().profile().spawn().await;
    let alice = app.signed_up().await;
    for id in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let response = app
            .get(&format!("/v1/users/{id}"), Some(&alice.access_token))
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{id}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }
    assert_eq!(
        app.get("/v1/users/me", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v1/users?prefix=a", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_edits_and_searches_are_400_and_change_nothing() {
    let app = TestApp::builder().profile().spawn().await;
    let alice = app.signed_up().await;
    let before = profile_of(&app, &alice).await;
    let long_url = format!("https://img.example/{}", "a".repeat(2040));
    for body in [
        json!({"display_name": ""}),
        json!({"display_name": "   "}),
        json!({"display_name": "x".repeat(65)}),
        json!({"display_name": null}),
        json!({"display_name": 7}),
        json!({"bio": "x".repeat(501)}),
        json!({"avatar_url": "http://img.example/a.png"}),
        json!({"avatar_url": "not a url"}),
        json!({"avatar_url": long_url}),
        json!({"nickname": "al"}),
        json!(["display_name"]),
    ] {
        let response = patch(&app, &alice, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_argument", "{body}");
    }
    assert_eq!(profile_of(&app, &alice).await, before);
    // The limits themselves are fine.
    let ok = patch(
        &app,
        &alice,
        &json!({"display_name": "é".repeat(64), "bio": "x".repeat(500)}),
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);

    for query in [
        "limit=0",
        "limit=101",
        "limit=x",
        &format!("prefix={}", "a".repeat(33)),
        // NUL, which PostgreSQL's text cannot hold: a 400, not a 500 from the database.
        "prefix=a%00",
    ] {
        let response = app
            .get(&format!("/v1/users?{query}"), Some(&alice.access_token))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_finds_usernames_by_prefix_in_order_without_case_and_limited() {
    let app = TestApp::builder().profile().spawn().await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(app.signed_up().await);
    }
    for session in &sessions {
        profile_of(&app, session).await;
    }
    // Every test username is `u_<12 hex>`: search by a whole name, and by a shared prefix.
    let target = &sessions[2].username;
    let upper = target.to_uppercase();
    let found: Value = app
        .get(
            &format!("/v1/users?prefix={upper}"),
            Some(&sessions[0].access_token),
        )
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = found["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, [target.as_str()]);

    let all: Value = app
        .get(
            "/v1/users?prefix=u_&limit=100",
            Some(&sessions[0].access_token),
        )
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<String> = all["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "ordered by username");
    for session in &sessions {
        assert!(names.contains(&session.username));
    }
    let two: Value = app
        .get(
            "/v1/users?prefix=u_&limit=2",
            Some(&sessions[0].access_token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(two["users"].as_array().unwrap().len(), 2);
    let none: Value = app
        .get(
            "/v1/users?prefix=zzzz_nobody",
            Some(&sessions[0].access_token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none, json!({"users": []}));
}

fn registration(user_id: &str, username: &str) -> Vec<u8> {
    Envelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        event_type: "user.registered".into(),
        occurred_at_ms: 0,
        traceparent: String::new(),
        payload: Some(Payload::UserRegistered(UserRegistered {
            user_id: user_id.into(),
            username: username.into(),
            registered_at_ms: 1_700_000_000_000,
        })),
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_survives_the_registration_event_arriving_again() {
    let app = TestApp::builder().profile().spawn().await;
    let alice = app.signed_up().await;
    profile_of(&app, &alice).await;
    let edited: Value = patch(&app, &alice, &json!({"display_name": "Kept"}))
        .await
        .json()
        .await
        .unwrap();

    // The same registration again (a redelivery), then a marker user to know it was consumed.
    kafka::produce_raw(
        &app.kafka,
        Topic::Users,
        &alice.user_id,
        &registration(&alice.user_id, &alice.username),
    )
    .await;
    let marker = app.signed_up().await;
    profile_of(&app, &marker).await;

    let after = profile_of(&app, &alice).await;
    assert_eq!(after, edited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_event_goes_to_the_dlq_and_the_events_behind_it_still_make_profiles() {
    let app = TestApp::builder().profile().spawn().await;
    let key = uuid::Uuid::new_v4().to_string();
    kafka::produce_raw(&app.kafka, Topic::Users, &key, b"\x00not an envelope").await;
    kafka::produce_raw(
        &app.kafka,
        Topic::Users,
        &key,
        &registration("not-a-uuid", "bad_one"),
    )
    .await;
    let alice = app.signed_up().await;
    profile_of(&app, &alice).await;
    // Messaging reads the topic too and parks the same events under its own group: count ours.
    let dead = kafka::read_dlq(&app.kafka, Topic::Users, 4, SOON).await;
    let ours: Vec<_> = dead
        .iter()
        .filter(|r| {
            r.header("dlq-group")
                .is_some_and(|g| g.starts_with("profile-"))
        })
        .collect();
    assert_eq!(ours.len(), 2, "{} dead letters in all", dead.len());
    assert!(ours.iter().all(|r| r.key.as_deref() == Some(key.as_str())));
    assert!(ours.iter().any(|r| {
        r.header("dlq-error")
            .unwrap_or_default()
            .contains("bad user_id")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_users_topic_into_a_fresh_database_rebuilds_the_same_profiles() {
    let app = TestApp::builder().profile().spawn().await;
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(app.signed_up().await);
    }
    for session in &sessions {
        profile_of(&app, session).await;
    }

    // A second profile service, empty, reading the topic from the start in a group of its own.
    let fresh = test_support::TestDatabase::new("profile");
    let mut options = realchat_profile::Options::new(fresh.url(), app.kafka.clone());
    options.consumer_group = test_support::unique("replay-");
    options.internal_tls = test_support::tls::internal("profile");
    let service = realchat_profile::Service::build(options).await.unwrap();
    let shutdown = realchat_runtime::Shutdown::new(Duration::from_secs(5));
    tokio::spawn(service.run(shutdown.clone()));

    let query = "SELECT user_id, username, display_name, bio, avatar_url, registered_at
                 FROM profiles ORDER BY user_id";
    type Row = (
        uuid::Uuid,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<time::OffsetDateTime>,
    );
    let mut original = app.profile_db.as_ref().unwrap().connect().await;
    let expected: Vec<Row> = sqlx::query_as(query)
        .fetch_all(&mut original)
        .await
        .unwrap();
    assert_eq!(expected.len(), 6);
    test_support::eventually("the replay to rebuild every profile", SOON, || async {
        let mut conn = fresh.connect().await;
        let rebuilt: Vec<Row> = sqlx::query_as(query).fetch_all(&mut conn).await.ok()?;
        (rebuilt == expected).then_some(())
    })
    .await;
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_is_there_the_moment_registration_returns_even_with_the_broker_down() {
    let mut broker = test_support::KafkaServer::start().await;
    let topics = kafka::fresh_topics_on(&broker.brokers()).await;
    let app = TestApp::builder().kafka(topics).profile().spawn().await;
    // No registration event can reach the profile service from here on.
    broker.stop();
    let (alice, bob) = (app.signed_up().await, app.signed_up().await);

    let own = app.get("/v1/users/me", Some(&alice.access_token)).await;
    assert_eq!(own.status(), StatusCode::OK);
    let own: Value = own.json().await.unwrap();
    assert_eq!(own["user_id"], alice.user_id.as_str());
    assert_eq!(own["username"], alice.username.as_str());
    assert_eq!(own["display_name"], alice.username.as_str());

    // Bob's first act is an edit, before anyone looked at his profile.
    let edited = patch(&app, &bob, &json!({"bio": "new here"})).await;
    assert_eq!(edited.status(), StatusCode::OK);
    let edited: Value = edited.json().await.unwrap();
    assert_eq!(edited["username"], bob.username.as_str());
    assert_eq!(edited["bio"], "new here");
    let seen = app
        .get(
            &format!("/v1/users/{}", bob.user_id),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(seen.status(), StatusCode::OK);
    assert_eq!(seen.json::<Value>().await.unwrap(), edited);

    // Ids auth does not know are still 404.
    let unknown = app
        .get(
            &format!("/v1/users/{}", uuid::Uuid::new_v4()),
            Some(&alice.access_token),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}
