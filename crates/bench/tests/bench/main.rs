//! A small version of every scenario against the real services, checker included: each must
//! pass, and the report must hold the figures a reader of `--json` relies on.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use test_support::{KafkaServer, TestApp, TestAppBuilder, kafka::fresh_topics_on};

/// Registration is rate-limited per IP; a benchmark registers many users from one.
fn app() -> TestAppBuilder {
    TestApp::builder().gateway(|o| {
        o.auth_ip_burst = 2_000;
        o.auth_ip_rate = 1_000.0;
    })
}

/// Runs the bench binary; returns its JSON report and whether it passed.
async fn bench(args: Vec<String>) -> (Value, bool) {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
            .args(&args)
            .arg("--json")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| {
        panic!(
            "no report: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (report, output.status.success())
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn assert_clean(report: &Value, passed: bool) {
    assert!(passed, "{report:#}");
    assert_eq!(report["passed"], true);
    for key in ["lost", "duplicates", "reordered", "gaps", "send_errors"] {
        assert_eq!(report[key], 0, "{key} in {report:#}");
    }
    assert_eq!(report["sent"], report["acked"]);
    for key in [
        "e2e_p50_ms",
        "e2e_p99_ms",
        "e2e_max_ms",
        "send_p99_ms",
        "delivered_per_s",
    ] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key} in {report:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_delivers_everything_in_order_and_measures_the_database_limit() {
    let app = app().delivery_replicas(2).spawn().await;
    let (report, passed) = bench(args(&[
        "direct",
        "--url",
        &app.base,
        "--rate",
        "40",
        "--duration",
        "3",
        "--warmup",
        "1",
        "--users",
        "6",
        "--limit-seconds",
        "1",
    ]))
    .await;
    assert_clean(&report, passed);
    assert_eq!(report["scenario"], "direct");
    assert_eq!(report["sent"], 160);
    assert_eq!(report["delivered"], 320);
    assert!(report["limit_pgbench_tps"].as_f64().unwrap() > 0.0);
    assert!(report["acked_per_s_to_limit"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_fanout_reaches_every_member_and_measures_the_bare_fanout_limit() {
    let app = app().delivery_replicas(2).spawn().await;
    let ws: Vec<String> = app
        .delivery
        .iter()
        .map(|r| format!("ws://{}/v1/ws", r.addr))
        .collect();
    let (report, passed) = bench(args(&[
        "group-fanout",
        "--url",
        &app.base,
        "--group-size",
        "30",
        "--rate",
        "20",
        "--duration",
        "3",
        "--warmup",
        "1",
        "--ws-url",
        &ws.join(","),
    ]))
    .await;
    assert_clean(&report, passed);
    assert_eq!(report["group_size"], 30);
    assert_eq!(report["sockets"], 30);
    assert_eq!(report["delivered"], 80 * 30);
    assert!(report["limit_bare_fanout_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["delivered_per_s_to_limit"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_holds_idle_sockets_and_reports_memory_per_socket() {
    let app = app().delivery_replicas(1).spawn().await;
    let ws = format!("ws://{}/v1/ws", app.delivery[0].addr);
    let (report, passed) = bench(args(&[
        "connections",
        "--url",
        &app.base,
        "--ws-url",
        &ws,
        "--sockets",
        "300",
        "--users",
        "30",
        "--hold",
        "1",
    ]))
    .await;
    assert!(passed, "{report:#}");
    assert_eq!(report["scenario"], "connections");
    assert_eq!(report["sockets"], 300);
    assert_eq!(report["disconnects"], 0);
    // The replica runs in this test's process, so its memory is this process's.
    assert!(report["bytes_per_socket"].is_number(), "{report:#}");
    assert!(report["connect_per_s"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_loses_nothing_and_reports_the_drain() {
    let broker = KafkaServer::start().await;
    let kafka = fresh_topics_on(&broker.brokers()).await;
    let app = app().kafka(kafka).delivery_replicas(1).spawn().await;
    // Freezing the broker is an outage its clients cannot tell from a dead one.
    let pid = broker.pid().unwrap().to_string();
    let (report, passed) = bench(args(&[
        "outage",
        "--url",
        &app.base,
        "--rate",
        "20",
        "--warmup",
        "1",
        "--users",
        "4",
        "--outage",
        "4",
        "--outage-after",
        "1",
        "--duration",
        "7",
        "--no-limits",
        "--stop-command",
        &format!("kill -STOP {pid}"),
        "--start-command",
        &format!("kill -CONT {pid}"),
    ]))
    .await;
    assert_clean(&report, passed);
    assert_eq!(report["scenario"], "outage");
    assert_eq!(report["sent"], 160);
    assert_eq!(report["outage_s"], 4.0);
    assert!(
        report["backlog_drain_s"].as_f64().unwrap() >= 0.0,
        "{report:#}"
    );
    // `app` is dropped before `broker` (reverse declaration order): its consumers close while
    // the broker still answers.
}
