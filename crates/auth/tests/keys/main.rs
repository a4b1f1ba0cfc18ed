//! Signing keys sealed at rest: what the database holds cannot mint tokens without the
//! key-encryption key, and the key-encryption key rotates without losing a signing key.

#![allow(clippy::unwrap_used)]

use base64::{Engine, engine::general_purpose::STANDARD};
use realchat_auth::{Options, Service};
use realchat_events::KafkaOptions;
use realchat_runtime::config::Secret;
use sqlx::PgPool;
use test_support::TestDatabase;

fn kek(byte: u8) -> String {
    STANDARD.encode([byte; 32])
}

fn options(db: &TestDatabase, current: Option<u8>, old: Option<u8>) -> Options {
    let mut options = Options::with_database(db.url());
    let mut kafka = KafkaOptions::new(test_support::kafka_brokers(), test_support::unique("t"));
    kafka.create_topics = false;
    options.kafka = kafka;
    options.key_encryption_key = current.map(|b| Secret::new(kek(b)));
    options.old_key_encryption_keys = old.map(|b| Secret::new(kek(b)));
    options
}

/// Each key's kid, KEK fingerprint, and whether its private part is stored in clear.
async fn stored_keys(pool: &PgPool) -> Vec<(String, Option<String>, bool)> {
    sqlx::query_as("SELECT kid, kek_id, private_der IS NOT NULL FROM signing_keys ORDER BY kid")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn published(service: &Service) -> Vec<String> {
    let mut kids = service.published_kids().await;
    kids.sort();
    kids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_database_without_the_key_encryption_key_cannot_load_the_signing_keys() {
    let db = TestDatabase::new("auth");
    let service = Service::build(options(&db, Some(1), None)).await.unwrap();
    let pool = service.pool().clone();
    let keys = stored_keys(&pool).await;
    assert!(!keys.is_empty());
    let kek_id = keys[0].1.clone().unwrap();
    for (kid, sealed_under, in_clear) in &keys {
        assert_eq!(sealed_under.as_deref(), Some(kek_id.as_str()), "{kid}");
        assert!(!in_clear, "{kid} is stored in clear");
    }
    let kids = published(&service).await;
    drop(service);

    // Without the KEK, or with another one, the keys do not load, and the error says which
    // KEK they need.
    for wrong in [None, Some(2)] {
        let error = Service::build(options(&db, wrong, None)).await.unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains(&kek_id), "{text}");
    }
    // With it, the same keys sign.
    let again = Service::build(options(&db, Some(1), None)).await.unwrap();
    assert_eq!(published(&again).await, kids);
    drop(again);

    // A throwaway topology that lost its KEK, told so, discards what it cannot open and makes
    // new keys instead of refusing to start.
    let mut lost = options(&db, Some(3), None);
    lost.discard_unopenable_keys = true;
    let fresh = Service::build(lost).await.unwrap();
    let new_kids = published(&fresh).await;
    assert!(!new_kids.is_empty());
    assert!(
        new_kids.iter().all(|kid| !kids.contains(kid)),
        "{new_kids:?} {kids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stored_in_clear_are_sealed_once_a_kek_is_given_and_a_rotation_reseals_them() {
    let db = TestDatabase::new("auth");
    let unsealed = Service::build(options(&db, None, None)).await.unwrap();
    let pool = unsealed.pool().clone();
    assert!(
        stored_keys(&pool)
            .await
            .iter()
            .all(|(_, kek, clear)| kek.is_none() && *clear)
    );
    let kids = published(&unsealed).await;
    drop(unsealed);

    // A KEK given: sealed as the service starts.
    let first = Service::build(options(&db, Some(1), None)).await.unwrap();
    let first_id = stored_keys(&pool).await[0].1.clone().unwrap();
    assert!(
        stored_keys(&pool)
            .await
            .iter()
            .all(|(_, kek, clear)| kek.as_deref() == Some(&first_id) && !clear)
    );
    assert_eq!(published(&first).await, kids);
    drop(first);

    // Rotation with the command: the new KEK, the old one to open with.
    let output = tokio::task::spawn_blocking({
        let url = db.url().to_owned();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_auth"))
                .arg("seal-keys")
                .env("REALCHAT_AUTH_DATABASE_URL", url)
                .env("REALCHAT_AUTH_KEY_ENCRYPTION_KEY", kek(2))
                .env("REALCHAT_AUTH_OLD_KEY_ENCRYPTION_KEYS", kek(1))
                .env("REALCHAT_KAFKA_CREATE_TOPICS", "false")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("signing keys sealed"), "{stdout}");
    let keys = stored_keys(&pool).await;
    let second_id = keys[0].1.clone().unwrap();
    assert_ne!(second_id, first_id);
    assert!(
        keys.iter()
            .all(|(_, kek, _)| kek.as_deref() == Some(&second_id))
    );

    // From now on the new KEK alone opens them, and the old one alone does not.
    let second = Service::build(options(&db, Some(2), None)).await.unwrap();
    assert_eq!(published(&second).await, kids);
    drop(second);
    assert!(Service::build(options(&db, Some(1), None)).await.is_err());
}
