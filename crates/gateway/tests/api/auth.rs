//! API.md § Auth: registration, login, refresh rotation and reuse detection, logout, me, JWKS.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{TestApp, unique};

use crate::assert_error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_answers_201_with_the_lower_cased_username() {
    let app = TestApp::spawn().await;
    let name = unique("Mixed_Case_");

    let response = app
        .post(
            "/v1/auth/register",
            &json!({"username": name, "password": "long enough"}),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["username"], name.to_lowercase());
    assert!(uuid::Uuid::parse_str(body["user_id"].as_str().unwrap()).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_taken_in_another_case_is_409_username_taken() {
    let app = TestApp::spawn().await;
    let name = unique("bob_");
    let first = app
        .post(
            "/v1/auth/register",
            &json!({"username": name, "password": "long enough"}),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);

    let second = app
        .post(
            "/v1/auth/register",
            &json!({"username": name.to_uppercase(), "password": "other password"}),
        )
        .await;

    assert_error(second, 409, "username_taken").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_registration_fields_are_400_invalid_argument() {
    let app = TestApp::spawn().await;
    let cases = [
        json!({"username": "ab", "password": "long enough"}),
        json!({"username": "a".repeat(33), "password": "long enough"}),
        json!({"username": "has space", "password": "long enough"}),
        json!({"username": "dash-name", "password": "long enough"}),
        json!({"username": "émile", "password": "long enough"}),
        json!({"username": unique("ok_"), "password": "short"}),
        json!({"username": unique("ok_"), "password": "x".repeat(129)}),
        json!({"username": unique("ok_")}),
        json!({"password": "long enough"}),
        json!({"username": 42, "password": "long enough"}),
        json!({"username": unique("ok_"), "password": null}),
        json!([]),
        json!("just a string"),
    ];
    for body in cases {
        let response = app.post("/v1/auth/register", &body).await;
        let error = assert_error(response, 400, "invalid_argument").await;
        assert!(
            !error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("panick"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_a_wrong_password_or_unknown_user_is_401_invalid_credentials() {
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;

    let wrong_password = app
        .post(
            "/v1/auth/login",
            &json!({"username": session.username, "password": "not the password"}),
        )
        .await;
    let unknown_user = app
        .post(
            "/v1/auth/login",
            &json!({"username": unique("ghost_"), "password": "whatever it is"}),
        )
        .await;
    let impossible_name = app
        .post(
            "/v1/auth/login",
            &json!({"username": "x", "password": "whatever it is"}),
        )
        .await;

    assert_error(wrong_password, 401, "invalid_credentials").await;
    assert_error(unknown_user, 401, "invalid_credentials").await;
    assert_error(impossible_name, 401, "invalid_credentials").await;
}

/// Guesses at one account from many addresses (each under the per-address limit) meet a
/// growing delay per account; the owner is delayed, never locked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_at_one_account_from_many_addresses_wait_longer_and_longer() {
    let app = TestApp::builder()
        .gateway(|o| o.trusted_proxy_hops = 1)
        .spawn()
        .await;
    let session = app.signed_up().await;
    let login = |password: &'static str, from: u32| {
        let request = app
            .http
            .post(format!("{}/v1/auth/login", app.base))
            .header("x-forwarded-for", format!("203.0.113.{}", from % 250 + 1))
            .json(&json!({"username": session.username, "password": password}));
        async move { request.send().await.unwrap() }
    };

    for from in 0..5 {
        assert_error(
            login("a wrong guess", from).await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    // The sixth waits, even from a new address and with the right password.
    let throttled = login("correct horse battery", 5).await;
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    assert_error(throttled, 429, "rate_limited").await;

    // After the wait one guess is checked; guesses sent together get one check between them.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let together =
        futures::future::join_all((10..15).map(|from| login("a wrong guess", from))).await;
    let mut statuses: Vec<u16> = together.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [401, 429, 429, 429, 429]);

    // The owner gets in once the (now two-second) wait has passed, and that resets the count.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        login("correct horse battery", 20).await.status(),
        StatusCode::OK
    );
    assert_error(login("a wrong guess", 21).await, 401, "invalid_credentials").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_returns_a_bearer_pair_that_me_accepts() {
    let app = TestApp::spawn().await;
    let username = unique("carol_");
    app.post(
        "/v1/auth/register",
        &json!({"username": username, "password": "long enough"}),
    )
    .await;

    let login = app
        .post(
            "/v1/auth/login",
            &json!({"username": username.to_uppercase(), "password": "long enough"}),
        )
        .await;

    assert_eq!(login.status(), StatusCode::OK);
    let body: Value = login.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert!(
        body["refresh_token"]
            .as_str()
            .is_some_and(|t| t.len() >= 40)
    );
    let me = app.get("/v1/auth/me", body["access_token"].as_str()).await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["user_id"], body["user_id"]);
    assert_eq!(me["username"], username);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_the_pair_and_spends_the_old_token() {
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;

    let refreshed = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": session.refresh_token}),
        )
        .await;

    assert_eq!(refreshed.status(), StatusCode::OK);
    let pair: Value = refreshed.json().await.unwrap();
    assert_ne!(pair["refresh_token"], session.refresh_token.as_str());
    assert_eq!(pair["user_id"], session.user_id.as_str());
    let me = app.get("/v1/auth/me", pair["access_token"].as_str()).await;
    assert_eq!(me.status(), StatusCode::OK);
    // The successor works once more: rotation goes on.
    let again = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": pair["refresh_token"]}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_spent_refresh_token_revokes_the_whole_family() {
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;
    let first = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": session.refresh_token}),
        )
        .await;
    let successor: Value = first.json().await.unwrap();

    // A thief replays the spent token.
    let replay = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": session.refresh_token}),
        )
        .await;

    assert_error(replay, 401, "unauthenticated").await;
    // The legitimate holder's newer token died with the family.
    let legit = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": successor["refresh_token"]}),
        )
        .await;
    assert_error(legit, 401, "unauthenticated").await;
    // Another login is another family and is unaffected.
    let relogin = app
        .post(
            "/v1/auth/login",
            &json!({"username": session.username, "password": session.password}),
        )
        .await;
    assert_eq!(relogin.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_refreshes_of_one_token_let_at_most_one_win() {
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;

    let body = json!({"refresh_token": session.refresh_token});
    let attempts = (0..8).map(|_| app.post("/v1/auth/refresh", &body));
    let statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();

    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 401),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 200).count() <= 1,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_refresh_token_and_is_idempotent() {
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;

    let logout = app
        .post(
            "/v1/auth/logout",
            &json!({"refresh_token": session.refresh_token}),
        )
        .await;

    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let refresh = app
        .post(
            "/v1/auth/refresh",
            &json!({"refresh_token": session.refresh_token}),
        )
        .await;
    assert_error(refresh, 401, "unauthenticated").await;
    let again = app
        .post(
            "/v1/auth/logout",
            &json!({"refresh_token": session.refresh_token}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    let unknown = app
        .post("/v1/auth/logout", &json!({"refresh_token": "never-issued"}))
        .await;
    assert_eq!(unknown.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_garbage_refresh_tokens_are_401() {
    let app = TestApp::spawn().await;
    for token in ["", "garbage", &"x".repeat(5000)] {
        let response = app
            .post("/v1/auth/refresh", &json!({"refresh_token": token}))
            .await;
        assert_error(response, 401, "unauthenticated").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_publishes_the_key_that_signs_access_tokens() {
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;

    let jwks: Value = app
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();

    let header = jsonwebtoken::decode_header(&session.access_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let kid = header.kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
    assert_eq!(
        (
            jwk["kty"].as_str(),
            jwk["crv"].as_str(),
            jwk["alg"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(jwk["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    // The published key, and nothing else, verifies the token.
    let key = jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["realchat"]);
    validation.set_issuer(&["realchat"]);
    let claims = jsonwebtoken::decode::<Value>(&session.access_token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], session.user_id.as_str());
    assert!(claims["jti"].is_string());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
}

/// Logs `session`'s user in again: another session of the same user.
async fn another_login(app: &TestApp, session: &test_support::Session) -> Value {
    let login = app
        .post(
            "/v1/auth/login",
            &json!({"username": session.username, "password": session.password}),
        )
        .await;
    assert_eq!(login.status(), StatusCode::OK);
    login.json().await.unwrap()
}

/// Waits until `token` is refused on `/v1/me`, as a revoked session's tokens are within a
/// poll of auth.
async fn refused_soon(app: &TestApp, token: &str) -> Value {
    test_support::eventually(
        "the revoked session's access token to be refused",
        Duration::from_secs(10),
        || async {
            let response = app.get("/v1/auth/me", Some(token)).await;
            if response.status() == StatusCode::UNAUTHORIZED {
                Some(response.json::<Value>().await.unwrap())
            } else {
                None
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_s_access_tokens_too_and_only_that_session_s() {
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;
    let other = another_login(&app, &session).await;
    assert_eq!(
        app.get("/v1/auth/me", Some(&session.access_token))
            .await
            .status(),
        StatusCode::OK
    );

    let logout = app
        .post(
            "/v1/auth/logout",
            &json!({"refresh_token": session.refresh_token}),
        )
        .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    let refused = refused_soon(&app, &session.access_token).await;
    assert_eq!(refused["error"]["code"], "unauthenticated");
    // The user's other login goes on.
    let other_token = other["access_token"].as_str().unwrap();
    assert_eq!(
        app.get("/v1/auth/me", Some(other_token)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_refresh_token_ends_the_access_tokens_of_its_family() {
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;
    let body = json!({"refresh_token": session.refresh_token});
    // The owner refreshes; a thief later replays the spent token.
    let rotated: Value = app
        .post("/v1/auth/refresh", &body)
        .await
        .json()
        .await
        .unwrap();
    let fresh_access = rotated["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get("/v1/auth/me", Some(&fresh_access)).await.status(),
        StatusCode::OK
    );
    assert_error(
        app.post("/v1/auth/refresh", &body).await,
        401,
        "unauthenticated",
    )
    .await;

    // Every access token of the family, old and new, stops working.
    refused_soon(&app, &fresh_access).await;
    refused_soon(&app, &session.access_token).await;
}
