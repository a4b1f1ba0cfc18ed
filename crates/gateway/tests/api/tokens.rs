//! Access-token checks: only an unexpired EdDSA token signed by auth's key, for `realchat`, passes.
//!
//! Forged tokens are minted here with the real private key, read from auth's database, so each
//! case differs from a good token in exactly one way.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sqlx::Row;
use test_support::TestApp;

use crate::assert_error;

struct SigningKey {
    kid: String,
    der: Vec<u8>,
    public: Vec<u8>,
}

async fn signing_key(app: &TestApp) -> SigningKey {
    let mut conn = app.auth_db.connect().await;
    let row = sqlx::query(
        "SELECT kid, private_der, public_key FROM signing_keys ORDER BY active_at DESC LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    SigningKey {
        kid: row.get("kid"),
        der: row.get("private_der"),
        public: row.get("public_key"),
    }
}

fn claims(user_id: &str) -> Value {
    let now = time_now();
    json!({"sub": user_id, "iss": "realchat", "aud": "realchat", "iat": now, "exp": now + 600, "jti": uuid::Uuid::new_v4()})
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&key.der)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_minted_with_the_real_key_and_right_claims_is_accepted() {
    // The control case: proves the forgeries below fail for their one difference.
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;
    let key = signing_key(&app).await;

    let response = app
        .get("/v1/auth/me", Some(&sign(&key, &claims(&session.user_id))))
        .await;

    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_garbage_tokens_are_401_unauthenticated() {
    let app = TestApp::spawn().await;
    assert_error(app.get("/v1/auth/me", None).await, 401, "unauthenticated").await;
    for garbage in ["garbage", "a.b.c", "eyJhbGciOiJFZERTQSJ9.e30.", ""] {
        let response = app.get("/v1/auth/me", Some(garbage)).await;
        assert_error(response, 401, "unauthenticated").await;
    }
    let basic = app
        .http
        .get(format!("{}/v1/auth/me", app.base))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_error(basic, 401, "unauthenticated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_401_token_expired() {
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;
    let key = signing_key(&app).await;
    let mut expired = claims(&session.user_id);
    expired["iat"] = json!(time_now() - 3600);
    expired["exp"] = json!(time_now() - 60);

    let response = app.get("/v1/auth/me", Some(&sign(&key, &expired))).await;

    assert_error(response, 401, "token_expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_really_expires_stops_working() {
    let app = TestApp::builder()
        .auth(|o| o.access_token_ttl_secs = 1)
        .gateway(|o| o.token_leeway_secs = 0)
        .spawn()
        .await;
    let session = app.signed_up().await;
    assert_eq!(
        app.get("/v1/auth/me", Some(&session.access_token))
            .await
            .status(),
        200
    );

    let token = session.access_token.clone();
    test_support::eventually(
        "the token to expire",
        std::time::Duration::from_secs(5),
        || {
            let response = app.get("/v1/auth/me", Some(&token));
            async move { (response.await.status() == 401).then_some(()) }
        },
    )
    .await;

    assert_error(
        app.get("/v1/auth/me", Some(&session.access_token)).await,
        401,
        "token_expired",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_payload_is_401() {
    let app = TestApp::spawn().await;
    let victim = app.signed_up().await;
    let attacker = app.signed_up().await;
    let parts: Vec<&str> = attacker.access_token.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = json!(victim.user_id);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );

    assert_error(
        app.get("/v1/auth/me", Some(&forged)).await,
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_401() {
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;
    let key = signing_key(&app).await;
    let header = json!({"alg": "none", "typ": "JWT", "kid": key.kid});
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims(&session.user_id).to_string())
    );

    assert_error(
        app.get("/v1/auth/me", Some(&unsigned)).await,
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hmac_token_keyed_with_the_public_key_is_401() {
    // The algorithm-confusion attack: HS256 with the (public) verification key as the secret.
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;
    let key = signing_key(&app).await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    let x = URL_SAFE_NO_PAD.encode(&key.public);
    for secret in [key.public.clone(), x.into_bytes()] {
        let token = jsonwebtoken::encode(
            &header,
            &claims(&session.user_id),
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_error(
            app.get("/v1/auth/me", Some(&token)).await,
            401,
            "unauthenticated",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_issuer_audience_or_missing_claims_are_401() {
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;
    let key = signing_key(&app).await;
    let mut wrong_iss = claims(&session.user_id);
    wrong_iss["iss"] = json!("someone-else");
    let mut wrong_aud = claims(&session.user_id);
    wrong_aud["aud"] = json!("another-app");
    let mut no_exp = claims(&session.user_id);
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut no_sub = claims(&session.user_id);
    no_sub.as_object_mut().unwrap().remove("sub");
    let mut bad_sub = claims(&session.user_id);
    bad_sub["sub"] = json!("not-a-uuid");

    for forged in [wrong_iss, wrong_aud, no_exp, no_sub, bad_sub] {
        let response = app.get("/v1/auth/me", Some(&sign(&key, &forged))).await;
        assert_error(response, 401, "unauthenticated").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_by_an_unknown_key_is_401() {
    let app = TestApp::spawn().await;
    let session = app.signed_up().await;
    let real = signing_key(&app).await;
    // A valid Ed25519 key that auth never published, once under a made-up kid and once
    // impersonating the real kid.
    let stranger = SigningKey {
        kid: "not-a-published-kid".into(),
        der: ed25519_der([7u8; 32]),
        public: Vec::new(),
    };
    let impostor = SigningKey {
        kid: real.kid.clone(),
        der: ed25519_der([7u8; 32]),
        public: Vec::new(),
    };
    for key in [stranger, impostor] {
        let response = app
            .get("/v1/auth/me", Some(&sign(&key, &claims(&session.user_id))))
            .await;
        assert_error(response, 401, "unauthenticated").await;
    }
}

/// PKCS#8 v1 DER of an Ed25519 private key (RFC 8410): a fixed prefix and the 32-byte seed.
fn ed25519_der(seed: [u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    der
}
