//! Rate limits: 429 with Retry-After per IP and per user, and failing open without Redis.

use std::time::Duration;

use serde_json::json;
use test_support::{RedisServer, TestApp, counter_value, eventually};

use crate::assert_error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hammering_the_auth_endpoints_from_one_ip_gets_429_with_retry_after() {
    let app = TestApp::builder()
        .gateway(|o| {
            o.auth_ip_rate = 0.2;
            o.auth_ip_burst = 3;
        })
        .spawn()
        .await;
    let body = json!({"username": "nobody_here", "password": "long enough"});

    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(app.post("/v1/auth/login", &body).await.status().as_u16());
    }
    let limited = app.post("/v1/auth/login", &body).await;

    assert_eq!(statuses, [401, 401, 401]);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    assert_error(limited, 429, "rate_limited").await;
    // Register and refresh share the per-IP bucket.
    let register = app.post("/v1/auth/register", &body).await;
    assert_error(register, 429, "rate_limited").await;
}

/// Behind one trusted proxy, the client is the entry the proxy appended: a made-up entry of the
/// client's own, new on every request, does not buy it a fresh bucket; another client (another
/// appended address) keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_made_up_forwarded_addresses_share_the_real_clients_bucket() {
    let app = TestApp::builder()
        .gateway(|o| {
            o.auth_ip_rate = 0.2;
            o.auth_ip_burst = 3;
            o.trusted_proxy_hops = 1;
        })
        .spawn()
        .await;
    let body = json!({"username": "nobody_here", "password": "long enough"});
    let login = |forwarded: String| {
        app.http
            .post(format!("{}/v1/auth/login", app.base))
            .header("x-forwarded-for", forwarded)
            .json(&body)
            .send()
    };
    let mut statuses = Vec::new();
    for spoofed in 1..=5 {
        let response = login(format!("10.9.9.{spoofed}, 203.0.113.7"))
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    let other = login("203.0.113.8".into()).await.unwrap();
    assert_eq!(
        other.status().as_u16(),
        401,
        "another client has its own bucket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_over_their_limit_gets_429_while_others_are_unaffected() {
    let app = TestApp::builder()
        .gateway(|o| {
            o.user_rate = 0.2;
            o.user_burst = 2;
        })
        .spawn()
        .await;
    let greedy = app.signed_up().await;
    let polite = app.signed_up().await;

    let first = app
        .get("/v1/auth/me", Some(&greedy.access_token))
        .await
        .status();
    let second = app
        .get("/v1/auth/me", Some(&greedy.access_token))
        .await
        .status();
    let third = app.get("/v1/auth/me", Some(&greedy.access_token)).await;

    assert_eq!((first.as_u16(), second.as_u16()), (200, 200));
    assert!(third.headers().contains_key("retry-after"));
    assert_error(third, 429, "rate_limited").await;
    assert_eq!(
        app.get("/v1/auth/me", Some(&polite.access_token))
            .await
            .status(),
        200
    );
}

/// While Redis is away each gateway keeps the limits itself: requests within them pass, the ones
/// past them are refused, every check is counted; the shared limits return with Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_the_gateway_keeps_the_limits_itself_until_redis_returns() {
    let mut redis = RedisServer::start().await;
    let options = redis.options();
    let app = TestApp::builder()
        .gateway(move |o| {
            o.redis = options;
            o.user_rate = 0.1;
            o.user_burst = 2;
        })
        .spawn()
        .await;
    let session = app.signed_up().await;
    let redis_calls_before = redis_calls(&app).await;
    assert_eq!(
        [
            me(&app, &session.access_token).await,
            me(&app, &session.access_token).await,
            me(&app, &session.access_token).await
        ],
        [200, 200, 429]
    );
    assert!(redis_calls(&app).await >= redis_calls_before + 3.0);
    assert_eq!(breaker_open(&app).await, 0.0);
    let fail_open_before = counter_value(
        &app.metrics().await,
        "gateway_rate_limit_fail_open_total",
        "scope=\"user\"",
    );

    redis.stop();

    // The process's own bucket starts full: the burst passes, then the limit holds.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(me(&app, &session.access_token).await);
    }
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    let other = app.signed_up().await;
    assert_eq!(
        me(&app, &other.access_token).await,
        200,
        "a Redis outage must not refuse requests within the limits"
    );
    let fail_open_after = counter_value(
        &app.metrics().await,
        "gateway_rate_limit_fail_open_total",
        "scope=\"user\"",
    );
    assert!(
        fail_open_after >= fail_open_before + 6.0,
        "{fail_open_before} -> {fail_open_after}"
    );
    // The breaker stays open for a second after each failed call: right after a request, it is.
    eventually(
        "the breaker to read open",
        Duration::from_secs(5),
        || async {
            me(&app, &session.access_token).await;
            (breaker_open(&app).await == 1.0).then_some(())
        },
    )
    .await;

    // Redis comes back (empty): the limiter finds it again by itself.
    redis.resume().await;
    eventually(
        "the limiter to use Redis again",
        Duration::from_secs(15),
        || {
            let request = app.get("/v1/auth/me", Some(&session.access_token));
            async move { (request.await.status() == 429).then_some(()) }
        },
    )
    .await;
    eventually(
        "the breaker to read closed",
        Duration::from_secs(5),
        || async { (breaker_open(&app).await == 0.0).then_some(()) },
    )
    .await;
}

/// Rate-limit calls to Redis made so far (in this process).
async fn redis_calls(app: &TestApp) -> f64 {
    counter_value(&app.metrics().await, "gateway_redis_seconds_count", "")
}

async fn breaker_open(app: &TestApp) -> f64 {
    counter_value(&app.metrics().await, "gateway_redis_breaker_open", "")
}

async fn me(app: &TestApp, token: &str) -> u16 {
    app.get("/v1/auth/me", Some(token)).await.status().as_u16()
}
