//! The directory with a million profiles: prefix-search latency through the gRPC service, and the
//! query plan. Prints figures; asserts nothing about speed.
//!
//! ```sh
//! cargo bench -p realchat-profile --bench directory
//! BENCH_PROFILES=1000000 BENCH_SEARCHES=5000 cargo bench -p realchat-profile --bench directory
//! ```
//!
//! It loads `BENCH_PROFILES` profiles into a fresh database on the PostgreSQL the tests use
//! (`REALCHAT_TEST_POSTGRES_URL`), runs the profile service in process, and searches with random
//! prefixes of 1 to 4 characters (the short ones match the most rows, which is the hard case for an
//! ordered, limited scan), `limit` 20, one at a time.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use rand::Rng as _;
use realchat_proto::profile::v1::{SearchProfilesRequest, profiles_client::ProfilesClient};
use realchat_runtime::Shutdown;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let profiles = env_or("BENCH_PROFILES", 1_000_000);
    let searches = env_or("BENCH_SEARCHES", 5_000);

    let db = test_support::TestDatabase::new("profile");
    realchat_profile::migrate(db.url()).await.unwrap();
    let mut conn = db.connect().await;
    let loading = Instant::now();
    // Usernames like auth makes them: lower-case letters, digits and `_`, spread over the alphabet.
    sqlx::query(
        "INSERT INTO profiles (user_id, username, display_name, registered_at, updated_at)
         SELECT gen_random_uuid(), name, name, now(), now()
         FROM (SELECT substr(md5(i::text), 1, 4) || '_' || i AS name
               FROM generate_series(1, $1) AS i) AS names",
    )
    .bind(profiles as i64)
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("ANALYZE profiles")
        .execute(&mut conn)
        .await
        .unwrap();
    println!(
        "loaded {profiles} profiles in {:.1}s",
        loading.elapsed().as_secs_f64()
    );

    let plan: Vec<(String,)> = sqlx::query_as(
        "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
         SELECT user_id, username, display_name, bio, avatar_url, updated_at FROM profiles
         WHERE username IS NOT NULL AND username >= 'a' AND username < 'b'
         ORDER BY username LIMIT 20",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    println!("plan of a one-letter prefix search:");
    for (line,) in plan {
        println!("    {line}");
    }

    let kafka = realchat_events::KafkaOptions::new(
        test_support::kafka_brokers(),
        test_support::unique("bench") + ".",
    );
    let mut options = realchat_profile::Options::new(db.url(), kafka);
    options.kafka.create_topics = false;
    let service = realchat_profile::Service::build(options).await.unwrap();
    let addr = service.grpc_addr();
    let shutdown = Shutdown::new(Duration::from_secs(5));
    tokio::spawn(service.run(shutdown.clone()));
    let mut client = ProfilesClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let alphabet: Vec<char> = "0123456789abcdef".chars().collect();
    let mut rng = rand::thread_rng();
    let mut latencies = Vec::with_capacity(searches as usize);
    let mut found = 0;
    for _ in 0..searches {
        let length = rng.gen_range(1..=4);
        let prefix: String = (0..length)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect();
        let started = Instant::now();
        let answer = client
            .search_profiles(SearchProfilesRequest {
                prefix,
                limit: Some(20),
            })
            .await
            .unwrap()
            .into_inner();
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        found += answer.profiles.len();
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "search (gRPC, limit 20)  n={searches} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms  ({:.1} profiles per answer)",
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
        found as f64 / searches as f64,
    );
    shutdown.trigger();
}
