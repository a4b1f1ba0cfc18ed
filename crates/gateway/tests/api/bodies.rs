//! Every JSON request body, generated: whatever a client sends, the answer is a success or one
//! of the API's documented errors in its shape, never a 5xx.

use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{Value, json};
use test_support::TestApp;

/// The API's error codes (docs/API.md).
const CODES: &[&str] = &[
    "invalid_argument",
    "malformed_json",
    "unauthenticated",
    "invalid_credentials",
    "token_expired",
    "forbidden",
    "not_found",
    "username_taken",
    "conflict",
    "payload_too_large",
    "unsupported_media_type",
    "rate_limited",
];

/// A body: either anything JSON, or an object with some of the endpoint's fields, each holding
/// something of the right kind or not, and some real ids among them.
fn body(fields: &'static [&'static str], ids: Vec<String>) -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::from),
        (0usize..5_000).prop_map(|n| Value::from("x".repeat(n))),
        prop::sample::select(ids.clone()).prop_map(Value::from),
        prop::sample::select(vec!["direct", "group", "DIRECT", ""]).prop_map(Value::from),
        prop::collection::vec(prop::sample::select(ids), 0..4).prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::hash_map(any::<String>(), inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    });
    let object =
        prop::collection::vec((prop::sample::select(fields.to_vec()), value.clone()), 0..5)
            .prop_map(|pairs| {
                Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                    .to_string()
            });
    prop_oneof![
        6 => object,
        2 => value.prop_map(|v| v.to_string()),
        1 => any::<String>(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_body_is_answered_with_success_or_a_documented_error() {
    let app = TestApp::builder()
        .profile()
        .gateway(|o| {
            o.auth_ip_burst = 100_000;
            o.auth_ip_rate = 100_000.0;
            o.user_burst = 100_000;
            o.user_rate = 100_000.0;
        })
        .spawn()
        .await;
    let (alice, bob) = (app.member().await, app.member().await);
    let group = app.group(&[&alice, &bob]).await;
    let ids = vec![
        alice.user_id.clone(),
        bob.user_id.clone(),
        group.clone(),
        uuid::Uuid::now_v7().to_string(),
        "not-a-uuid".to_owned(),
        alice.refresh_token.clone(),
        alice.username.clone(),
    ];
    let endpoints: Vec<(reqwest::Method, String, &'static [&'static str])> = vec![
        (
            reqwest::Method::POST,
            "/v1/auth/register".into(),
            &["username", "password"],
        ),
        (
            reqwest::Method::POST,
            "/v1/auth/login".into(),
            &["username", "password"],
        ),
        (
            reqwest::Method::POST,
            "/v1/auth/refresh".into(),
            &["refresh_token"],
        ),
        (
            reqwest::Method::POST,
            "/v1/auth/logout".into(),
            &["refresh_token"],
        ),
        (
            reqwest::Method::POST,
            "/v1/conversations".into(),
            &["kind", "member_ids", "title"],
        ),
        (
            reqwest::Method::POST,
            format!("/v1/conversations/{group}/members"),
            &["user_id"],
        ),
        (
            reqwest::Method::POST,
            format!("/v1/conversations/{group}/messages"),
            &["client_msg_id", "body"],
        ),
        (
            reqwest::Method::POST,
            format!("/v1/conversations/{group}/read"),
            &["seq"],
        ),
        (
            reqwest::Method::PATCH,
            "/v1/users/me".into(),
            &["display_name", "bio", "avatar_url"],
        ),
    ];
    let runtime = tokio::runtime::Handle::current();
    let answered = std::sync::atomic::AtomicUsize::new(0);
    for (method, path, fields) in endpoints {
        let mut runner = TestRunner::new(Config {
            cases: 48,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&body(fields, ids.clone()), |body| {
            let request = app
                .http
                .request(method.clone(), format!("{}{path}", app.base))
                .bearer_auth(&bob.access_token)
                .header("content-type", "application/json")
                .body(body.clone());
            let (status, answer) = tokio::task::block_in_place(|| {
                runtime.block_on(async {
                    let response = request.send().await.unwrap();
                    let status = response.status().as_u16();
                    (
                        status,
                        response.json::<Value>().await.unwrap_or(Value::Null),
                    )
                })
            });
            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            prop_assert!(status < 500, "{method} {path} {body:?}: {status} {answer}");
            if status >= 400 {
                let code = answer["error"]["code"].as_str().unwrap_or_default();
                prop_assert!(
                    CODES.contains(&code),
                    "{method} {path} {body:?}: {status} {answer}"
                );
                prop_assert!(
                    answer["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()),
                    "{answer}"
                );
            }
            Ok::<(), TestCaseError>(())
        });
        if let Err(failure) = result {
            panic!("{failure}");
        }
    }
    assert!(answered.into_inner() >= 9 * 48);
}
