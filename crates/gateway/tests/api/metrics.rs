//! What an operator reads off `/metrics` (every service's admin port renders the one registry the
//! in-process services share here): latencies as histograms with buckets, the database pools, the
//! Kafka clients' statistics, the process.

use std::time::Duration;

use test_support::TestApp;

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn sample(exposition: &str, name: &str, labels: &[&str]) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_has_histograms_pools_kafka_statistics_and_the_process() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.member().await, app.member().await);
    let conversation = app.direct(&alice, &bob).await;
    app.send(&alice, &conversation, "measured").await;

    // Latencies are histograms: buckets that add up across replicas, ending in +Inf.
    let scrape = app.metrics().await;
    let route = "route=\"/v1/conversations/{id}/messages\"";
    let all = sample(
        &scrape,
        "gateway_http_request_duration_seconds_bucket",
        &[route, "le=\"+Inf\""],
    )
    .unwrap_or_default();
    assert!(all >= 1.0, "no +Inf bucket for the send route:\n{scrape}");
    let fast = sample(
        &scrape,
        "gateway_http_request_duration_seconds_bucket",
        &[route, "le=\"0.0005\""],
    )
    .unwrap_or_default();
    assert!(fast <= all, "buckets are cumulative");
    assert!(
        !scrape.contains("quantile=\""),
        "no summaries are left:\n{scrape}"
    );

    // Each database pool: its size and what is in use.
    assert!(sample(&scrape, "db_pool_max_connections", &["database=\""]).is_some_and(|n| n > 0.0));
    assert!(sample(&scrape, "db_pool_connections", &["state=\"idle\""]).is_some());

    // The process.
    assert!(sample(&scrape, "process_open_fds", &[]).is_some_and(|n| n > 0.0));
    assert!(sample(&scrape, "process_max_fds", &[]).is_some_and(|n| n > 0.0));
    assert!(sample(&scrape, "process_resident_memory_bytes", &[]).is_some_and(|n| n > 0.0));
    assert!(sample(&scrape, "process_cpu_seconds_total", &[]).is_some_and(|n| n > 0.0));

    // The Kafka clients report every 5 s: messaging's consumer of the users topic its lag per
    // partition, and the relays' producers that their broker is up.
    test_support::eventually(
        "Kafka statistics in the scrape",
        Duration::from_secs(20),
        || async {
            let scrape = app.metrics().await;
            let lag = sample(
                &scrape,
                "kafka_consumer_lag_messages",
                &["topic=\"", "users", "partition=\""],
            );
            let consumer_up = sample(&scrape, "kafka_broker_up", &["role=\"consumer\""]);
            let producer_up = sample(&scrape, "kafka_broker_up", &["role=\"producer\""]);
            (lag.is_some() && consumer_up == Some(1.0) && producer_up == Some(1.0)).then_some(())
        },
    )
    .await;
}
