//! API.md § Conversations: direct and group conversations, members, the list, and who may see what.

use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::TestApp;

use crate::assert_error;

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_conversation_is_created_once_per_pair() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.member().await, app.member().await);

    let first = app
        .post_as(
            &alice.access_token,
            "/v1/conversations",
            &json!({"kind": "direct", "member_ids": [bob.user_id]}),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first = json_of(first).await;
    // Bob opening it the other way round, listing himself too, gets the same one with 200.
    let again = app
        .post_as(
            &bob.access_token,
            "/v1/conversations",
            &json!({"kind": "direct", "member_ids": [alice.user_id, bob.user_id]}),
        )
        .await;

    assert_eq!(again.status(), StatusCode::OK);
    let again = json_of(again).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(first["kind"], "direct");
    assert_eq!(first["title"], Value::Null);
    assert_eq!(first["last_seq"], 0);
    let mut members: Vec<&str> = first["member_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    members.sort_unstable();
    let mut expected = vec![alice.user_id.as_str(), bob.user_id.as_str()];
    expected.sort_unstable();
    assert_eq!(members, expected);
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_conversations_are_400() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol) = (app.member().await, app.member().await, app.member().await);
    let cases = [
        json!({"kind": "direct", "member_ids": []}),
        json!({"kind": "direct", "member_ids": [alice.user_id]}),
        json!({"kind": "direct", "member_ids": [bob.user_id, carol.user_id]}),
        json!({"kind": "direct", "member_ids": [uuid::Uuid::new_v4()]}),
        json!({"kind": "group", "member_ids": [uuid::Uuid::new_v4()]}),
        json!({"kind": "group", "member_ids": ["not-a-uuid"]}),
        json!({"kind": "channel", "member_ids": [bob.user_id]}),
        json!({"kind": "group", "member_ids": [bob.user_id], "title": "x".repeat(201)}),
        json!({"kind": "group", "member_ids": [bob.user_id], "title": "a\u{0}b"}),
        json!({"kind": "group"}),
        json!({"member_ids": [bob.user_id]}),
        json!({"kind": "group", "member_ids": "everyone"}),
    ];
    for body in cases {
        let response = app
            .post_as(&alice.access_token, "/v1/conversations", &body)
            .await;
        assert_error(response, 400, "invalid_argument").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_can_hold_a_thousand_members_and_not_one_more() {
    let app = TestApp::spawn().await;
    let owner = app.member().await;
    let guest = app.member().await;
    // Members must be registered users: make 999 known to messaging directly (registering them
    // through auth would spend minutes on password hashes).
    let others: Vec<uuid::Uuid> = (0..999).map(|_| uuid::Uuid::now_v7()).collect();
    let mut conn = app.messaging_db.connect().await;
    sqlx::query("INSERT INTO known_users (id, username, registered_at) SELECT u, u::text, now() FROM unnest($1::uuid[]) u")
        .bind(&others)
        .execute(&mut conn)
        .await
        .unwrap();

    let full = app
        .post_as(
            &owner.access_token,
            "/v1/conversations",
            &json!({"kind": "group", "member_ids": others, "title": "all hands"}),
        )
        .await;

    assert_eq!(full.status(), StatusCode::CREATED);
    let full = json_of(full).await;
    assert_eq!(full["member_ids"].as_array().unwrap().len(), 1000);
    assert_eq!(full["title"], "all hands");
    let id = full["id"].as_str().unwrap();
    let one_more = app
        .post_as(
            &owner.access_token,
            &format!("/v1/conversations/{id}/members"),
            &json!({"user_id": guest.user_id}),
        )
        .await;
    assert_error(one_more, 400, "invalid_argument").await;
    let mut too_many = others.clone();
    too_many.push(guest.user_id.parse().unwrap());
    let oversized = app
        .post_as(
            &owner.access_token,
            "/v1/conversations",
            &json!({"kind": "group", "member_ids": too_many}),
        )
        .await;
    assert_error(oversized, 400, "invalid_argument").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_can_be_added_and_removed_by_the_rules() {
    let app = TestApp::spawn().await;
    let (owner, bob, carol) = (app.member().await, app.member().await, app.member().await);
    let group = json_of(
        app.post_as(
            &owner.access_token,
            "/v1/conversations",
            &json!({"kind": "group", "member_ids": [bob.user_id]}),
        )
        .await,
    )
    .await;
    let id = group["id"].as_str().unwrap();
    let members = format!("/v1/conversations/{id}/members");

    let added = app
        .post_as(
            &bob.access_token,
            &members,
            &json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(added.status(), StatusCode::OK);
    assert_eq!(
        json_of(added).await["member_ids"].as_array().unwrap().len(),
        3
    );
    // Adding again is harmless.
    let twice = app
        .post_as(
            &owner.access_token,
            &members,
            &json!({"user_id": carol.user_id}),
        )
        .await;
    assert_eq!(twice.status(), StatusCode::OK);
    // Unknown users are a 400.
    let unknown = app
        .post_as(
            &owner.access_token,
            &members,
            &json!({"user_id": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_error(unknown, 400, "invalid_argument").await;
    // Bob may not remove Carol (only the creator removes others), but may leave himself.
    let not_his = app
        .delete_as(&bob.access_token, &format!("{members}/{}", carol.user_id))
        .await;
    assert_error(not_his, 403, "forbidden").await;
    let left = app
        .delete_as(&bob.access_token, &format!("{members}/{}", bob.user_id))
        .await;
    assert_eq!(left.status(), StatusCode::NO_CONTENT);
    // Gone means gone: the group is now a 404 for Bob.
    let after = app
        .get(&format!("/v1/conversations/{id}"), Some(&bob.access_token))
        .await;
    assert_error(after, 404, "not_found").await;
    // The creator removes Carol; removing her twice is a 404.
    let removed = app
        .delete_as(&owner.access_token, &format!("{members}/{}", carol.user_id))
        .await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let again = app
        .delete_as(&owner.access_token, &format!("{members}/{}", carol.user_id))
        .await;
    assert_error(again, 404, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_conversations_do_not_take_member_changes() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol) = (app.member().await, app.member().await, app.member().await);
    let direct = json_of(
        app.post_as(
            &alice.access_token,
            "/v1/conversations",
            &json!({"kind": "direct", "member_ids": [bob.user_id]}),
        )
        .await,
    )
    .await;
    let id = direct["id"].as_str().unwrap();

    let add = app
        .post_as(
            &alice.access_token,
            &format!("/v1/conversations/{id}/members"),
            &json!({"user_id": carol.user_id}),
        )
        .await;
    let remove = app
        .delete_as(
            &alice.access_token,
            &format!("/v1/conversations/{id}/members/{}", bob.user_id),
        )
        .await;

    assert_error(add, 403, "forbidden").await;
    assert_error(remove, 403, "forbidden").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_get_404_for_everything_about_a_conversation() {
    let app = TestApp::spawn().await;
    let (alice, bob, mallory) = (app.member().await, app.member().await, app.member().await);
    let direct = json_of(
        app.post_as(
            &alice.access_token,
            "/v1/conversations",
            &json!({"kind": "direct", "member_ids": [bob.user_id]}),
        )
        .await,
    )
    .await;
    let id = direct["id"].as_str().unwrap();
    let token = &mallory.access_token;

    assert_error(
        app.get(&format!("/v1/conversations/{id}"), Some(token))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get(&format!("/v1/conversations/{id}/messages"), Some(token))
            .await,
        404,
        "not_found",
    )
    .await;
    let send = app
        .post_as(
            token,
            &format!("/v1/conversations/{id}/messages"),
            &json!({"client_msg_id": "m1", "body": "hi"}),
        )
        .await;
    assert_error(send, 404, "not_found").await;
    let read = app
        .post_as(
            token,
            &format!("/v1/conversations/{id}/read"),
            &json!({"seq": 1}),
        )
        .await;
    assert_error(read, 404, "not_found").await;
    let join = app
        .post_as(
            token,
            &format!("/v1/conversations/{id}/members"),
            &json!({"user_id": mallory.user_id}),
        )
        .await;
    assert_error(join, 404, "not_found").await;
    // Ids that do not exist, or are not even ids, look the same.
    for missing in [uuid::Uuid::new_v4().to_string(), "nonsense".to_owned()] {
        let response = app
            .get(
                &format!("/v1/conversations/{missing}"),
                Some(&alice.access_token),
            )
            .await;
        assert_error(response, 404, "not_found").await;
    }
    // And the list never shows it.
    let list = json_of(app.get("/v1/conversations", Some(token)).await).await;
    assert_eq!(list["conversations"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_is_most_recent_first_with_unread_counts_and_last_messages() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol) = (app.member().await, app.member().await, app.member().await);
    let create = |token: String, other: String| {
        let app = &app;
        async move {
            json_of(
                app.post_as(
                    &token,
                    "/v1/conversations",
                    &json!({"kind": "direct", "member_ids": [other]}),
                )
                .await,
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let with_bob = create(alice.access_token.clone(), bob.user_id.clone()).await;
    let with_carol = create(alice.access_token.clone(), carol.user_id.clone()).await;
    for (i, body) in ["one", "two", "three"].iter().enumerate() {
        app.post_as(
            &bob.access_token,
            &format!("/v1/conversations/{with_bob}/messages"),
            &json!({"client_msg_id": format!("b{i}"), "body": body}),
        )
        .await;
    }
    app.post_as(
        &carol.access_token,
        &format!("/v1/conversations/{with_carol}/messages"),
        &json!({"client_msg_id": "c0", "body": "newest"}),
    )
    .await;

    let list = json_of(
        app.get("/v1/conversations", Some(&alice.access_token))
            .await,
    )
    .await;

    let conversations = list["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 2);
    assert_eq!(conversations[0]["id"], with_carol.as_str());
    assert_eq!(conversations[0]["unread_count"], 1);
    assert_eq!(conversations[0]["last_message"]["body"], "newest");
    assert_eq!(conversations[1]["id"], with_bob.as_str());
    assert_eq!(conversations[1]["unread_count"], 3);
    assert_eq!(conversations[1]["last_message"]["seq"], 3);
    // Reading moves the count; Bob's own messages never count as unread for him.
    let read = app
        .post_as(
            &alice.access_token,
            &format!("/v1/conversations/{with_bob}/read"),
            &json!({"seq": 2}),
        )
        .await;
    assert_eq!(read.status(), StatusCode::NO_CONTENT);
    let list = json_of(
        app.get("/v1/conversations", Some(&alice.access_token))
            .await,
    )
    .await;
    assert_eq!(list["conversations"][1]["unread_count"], 1);
    let bobs = json_of(app.get("/v1/conversations", Some(&bob.access_token)).await).await;
    assert_eq!(bobs["conversations"][0]["unread_count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_registered_a_moment_ago_can_be_added_even_with_the_broker_down() {
    let mut broker = test_support::KafkaServer::start().await;
    let topics = test_support::kafka::fresh_topics_on(&broker.brokers()).await;
    let app = TestApp::builder().kafka(topics).spawn().await;
    // Messaging learns users from registration events; none can reach it from here on.
    broker.stop();
    let (alice, bob, carol, dave) = (
        app.signed_up().await,
        app.signed_up().await,
        app.signed_up().await,
        app.signed_up().await,
    );

    let direct = app
        .post_as(
            &alice.access_token,
            "/v1/conversations",
            &json!({"kind": "direct", "member_ids": [bob.user_id]}),
        )
        .await;
    assert_eq!(direct.status(), StatusCode::CREATED);
    let group = app
        .post_as(
            &alice.access_token,
            "/v1/conversations",
            &json!({"kind": "group", "member_ids": [bob.user_id, carol.user_id]}),
        )
        .await;
    assert_eq!(group.status(), StatusCode::CREATED);
    let group = json_of(group).await;
    let added = app
        .post_as(
            &carol.access_token,
            &format!(
                "/v1/conversations/{}/members",
                group["id"].as_str().unwrap()
            ),
            &json!({"user_id": dave.user_id}),
        )
        .await;
    assert_eq!(added.status(), StatusCode::OK);
    assert_eq!(
        json_of(added).await["member_ids"].as_array().unwrap().len(),
        4
    );

    // Ids that nobody registered are still refused, and named.
    let stranger = uuid::Uuid::new_v4();
    let refused = app
        .post_as(
            &alice.access_token,
            "/v1/conversations",
            &json!({"kind": "group", "member_ids": [bob.user_id, stranger]}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body = json_of(refused).await;
    assert_eq!(body["error"]["code"], "invalid_argument");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&stranger.to_string()), "{message}");
    assert!(!message.contains(&bob.user_id), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_messaging_cannot_confirm_with_auth_is_503_not_unknown() {
    // Messaging's way to auth leads nowhere; the gateway still reaches auth.
    let nowhere = format!("http://127.0.0.1:{}", test_support::free_port());
    let app = TestApp::builder()
        .messaging(move |o| o.auth_endpoint = nowhere)
        .spawn()
        .await;
    // Known through its registration event: no need to ask auth.
    let (alice, known) = (app.member().await, app.member().await);
    let direct = app
        .post_as(
            &alice.access_token,
            "/v1/conversations",
            &json!({"kind": "direct", "member_ids": [known.user_id]}),
        )
        .await;
    assert_eq!(direct.status(), StatusCode::CREATED);

    // Not known yet, and auth cannot be asked: retry later, not "unknown user".
    let refused = app
        .post_as(
            &alice.access_token,
            "/v1/conversations",
            &json!({"kind": "direct", "member_ids": [uuid::Uuid::new_v4()]}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    assert_error(refused, 503, "unavailable").await;
}

/// Makes `count` users known to messaging directly (registering them through auth would spend
/// most of the test on password hashes); their ids.
async fn known_users(app: &TestApp, count: usize) -> Vec<uuid::Uuid> {
    let users: Vec<uuid::Uuid> = (0..count).map(|_| uuid::Uuid::now_v7()).collect();
    let mut conn = app.messaging_db.connect().await;
    sqlx::query("INSERT INTO known_users (id, username, registered_at) SELECT u, u::text, now() FROM unnest($1::uuid[]) u")
        .bind(&users)
        .execute(&mut conn)
        .await
        .unwrap();
    users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_names_the_first_members_and_the_members_page_through_all_of_them() {
    let app = TestApp::spawn().await;
    let owner = app.member().await;
    let others = known_users(&app, 299).await;
    let created = json_of(
        app.post_as(
            &owner.access_token,
            "/v1/conversations",
            &json!({"kind": "group", "member_ids": others, "title": "big"}),
        )
        .await,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let mut everyone: Vec<String> = others.iter().map(ToString::to_string).collect();
    everyone.push(owner.user_id.clone());
    everyone.sort();

    // The list: the count, and the first 100 ids.
    let list = json_of(
        app.get("/v1/conversations", Some(&owner.access_token))
            .await,
    )
    .await;
    let listed = &list["conversations"][0];
    assert_eq!(listed["id"], id.as_str());
    assert_eq!(listed["member_count"], 300);
    let first: Vec<String> = serde_json::from_value(listed["member_ids"].clone()).unwrap();
    assert_eq!(first, everyone[..100]);

    // One conversation: all of them.
    let one = json_of(
        app.get(
            &format!("/v1/conversations/{id}"),
            Some(&owner.access_token),
        )
        .await,
    )
    .await;
    assert_eq!(
        (
            one["member_count"].as_u64(),
            one["member_ids"].as_array().unwrap().len()
        ),
        (Some(300), 300)
    );

    // Paged: every member once, in order.
    let mut paged: Vec<String> = Vec::new();
    let mut after = String::new();
    loop {
        let query = if after.is_empty() {
            "limit=128".to_owned()
        } else {
            format!("limit=128&after={after}")
        };
        let page = json_of(
            app.get(
                &format!("/v1/conversations/{id}/members?{query}"),
                Some(&owner.access_token),
            )
            .await,
        )
        .await;
        assert_eq!(page["member_count"], 300);
        let ids: Vec<String> = serde_json::from_value(page["member_ids"].clone()).unwrap();
        let last_page = ids.len() < 128;
        after = ids.last().cloned().unwrap_or_default();
        paged.extend(ids);
        if last_page {
            break;
        }
    }
    assert_eq!(paged, everyone);

    // Not a member: as if there were no such conversation. Bad paging: 400.
    let stranger = app.signed_up().await;
    let path = format!("/v1/conversations/{id}/members");
    assert_error(
        app.get(&path, Some(&stranger.access_token)).await,
        404,
        "not_found",
    )
    .await;
    for bad in ["limit=0", "limit=1001", "after=nope"] {
        assert_error(
            app.get(&format!("{path}?{bad}"), Some(&owner.access_token))
                .await,
            400,
            "invalid_argument",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_conversations_and_adding_members_is_limited_per_user() {
    let app = TestApp::builder()
        .gateway(|o| {
            o.membership_burst = 3;
            o.membership_rate = 0.01;
        })
        .spawn()
        .await;
    let (alice, bob) = (app.member().await, app.member().await);
    let others = known_users(&app, 3).await;
    let group = |member: uuid::Uuid| json!({"kind": "group", "member_ids": [member], "title": "g"});
    let first = json_of(
        app.post_as(&alice.access_token, "/v1/conversations", &group(others[0]))
            .await,
    )
    .await;
    for member in &others[1..] {
        let created = app
            .post_as(&alice.access_token, "/v1/conversations", &group(*member))
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    // The fourth, a new group or a member added, waits.
    let refused = app
        .post_as(&alice.access_token, "/v1/conversations", &group(others[0]))
        .await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_error(refused, 429, "rate_limited").await;
    let id = first["id"].as_str().unwrap();
    assert_error(
        app.post_as(
            &alice.access_token,
            &format!("/v1/conversations/{id}/members"),
            &json!({"user_id": bob.user_id}),
        )
        .await,
        429,
        "rate_limited",
    )
    .await;
    // Another user is not held back, and reading is not limited by it.
    let theirs = app
        .post_as(&bob.access_token, "/v1/conversations", &group(others[1]))
        .await;
    assert_eq!(theirs.status(), StatusCode::CREATED);
    assert_eq!(
        app.get("/v1/conversations", Some(&alice.access_token))
            .await
            .status(),
        StatusCode::OK
    );
}
