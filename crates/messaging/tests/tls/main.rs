//! TLS to PostgreSQL, as to a managed database that requires it (RDS with `rds.force_ssl`):
//! `sslmode` and `sslrootcert` in the URL are honoured, against a real PostgreSQL server whose
//! certificate a CA of the test's own signed.

#![allow(clippy::unwrap_used)]

use realchat_events::KafkaOptions;
use realchat_messaging::{Options, Service};
use test_support::tls::{TestCa, TlsPostgres};

fn kafka() -> KafkaOptions {
    let mut kafka = KafkaOptions::new(test_support::kafka_brokers(), test_support::unique("t"));
    kafka.create_topics = false;
    kafka
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_over_tls_and_a_ca_that_did_not_sign_the_server_stops_startup() {
    let dir = std::env::temp_dir().join(test_support::unique("realchat-pg-ca-"));
    let ca = TestCa::new(&dir, "postgres");
    let server = TlsPostgres::start(&ca.issue("postgres"));
    let verified = |ca: &TestCa| {
        server.url(
            "messaging",
            &format!("sslmode=verify-full&sslrootcert={}", ca.cert.display()),
        )
    };

    // The URL from a file, as a container platform mounts a secret; the variable's value loses.
    let url_file = dir.join("database-url");
    std::fs::write(&url_file, format!("{}\n", verified(&ca))).unwrap();
    let mut options = Options::new("postgres://nobody@127.0.0.1:1/none", kafka());
    options.database.url_file = Some(url_file);
    let service = Service::build(options).await.unwrap();
    let (ssl, version): (bool, String) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(service.pool())
            .await
            .unwrap();
    assert!(ssl, "the pool's connections use TLS");
    assert!(version.starts_with("TLS"), "{version}");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'outbox'",
    )
    .fetch_one(service.pool())
    .await
    .unwrap();
    assert_eq!(tables, 1, "migrated over TLS");
    drop(service);

    // A CA that did not sign the server's certificate: startup stops, saying why, whether or not
    // it migrates first.
    let stranger = TestCa::new(&dir, "stranger");
    for migrate in [true, false] {
        let mut options = Options::new(verified(&stranger), kafka());
        options.database.migrate = migrate;
        let error = Service::build(options).await.unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("REALCHAT_MESSAGING_DATABASE_URL") && text.contains("TLS to PostgreSQL"),
            "migrate={migrate}: {text}"
        );
        assert!(text.contains("certificate"), "migrate={migrate}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
