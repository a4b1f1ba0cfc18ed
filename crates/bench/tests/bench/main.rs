//! A small `direct` run against the real services, checker included.

#![allow(clippy::unwrap_used)]

use test_support::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_direct_run_delivers_everything_in_order() {
    let app = TestApp::builder().delivery_replicas(2).spawn().await;
    let base = app.base.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
            .args([
                "direct",
                "--url",
                &base,
                "--rate",
                "40",
                "--duration",
                "3",
                "--warmup",
                "1",
            ])
            .args(["--users", "6", "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["scenario"], "direct");
    assert_eq!(report["sent"], 160);
    assert_eq!(report["acked"], 160);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["reordered"], 0);
    assert_eq!(report["gaps"], 0);
    assert_eq!(report["delivered"], 320);
    assert!(report["e2e_p99_ms"].as_f64().unwrap() > 0.0);
}
