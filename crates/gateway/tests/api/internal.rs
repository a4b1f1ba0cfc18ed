//! The internal gRPC servers act for whichever user a call names (`caller_id`), so under mutual
//! TLS only the services that call them get in, and a caller talks only to the service it meant.

use realchat_proto::messaging::v1::ListConversationsRequest;
use realchat_runtime::{
    clients,
    tls::{InternalTls, InternalTlsOptions},
};
use test_support::{TestApp, tls::TestCa, unique};

/// Lists `caller`'s conversations from the messaging server at `addr`, calling as `tls` says and
/// expecting the server to be messaging.
async fn list_as(
    tls: &InternalTls,
    addr: std::net::SocketAddr,
    caller: &str,
) -> Result<usize, tonic::Status> {
    let channel = clients::channel("messaging", &format!("http://{addr}"), tls, "messaging")
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    let mut messaging = clients::messaging(channel);
    let answer = messaging
        .list_conversations(ListConversationsRequest {
            caller_id: caller.to_owned(),
        })
        .await?;
    Ok(answer.into_inner().conversations.len())
}

/// A call that failed in transport, with no answer from the service: the connection was refused
/// in the TLS handshake (that it was, the servers' count of refused handshakes shows). How the
/// client sees it depends on when the refusal arrives (TLS 1.3 checks the client's certificate
/// last, after the call went out; a plaintext client reads the TLS alert as HTTP/2); the gateway
/// answers each of those with 503.
fn assert_refused(answer: Result<usize, tonic::Status>) {
    let status = answer.expect_err("the call must be refused");
    assert_eq!(
        realchat_runtime::grpc::api_code(&status),
        None,
        "{status:?}"
    );
    let answered = realchat_runtime::api_error::ApiError::from(status);
    assert_eq!(answered.status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_grpc_accepts_only_its_callers_and_callers_only_their_service() {
    let app = TestApp::builder().profile().spawn().await;
    let (alice, bob) = (app.member().await, app.member().await);
    app.direct(&alice, &bob).await;

    // The gateway's certificate: messaging answers for alice.
    let gateway = test_support::tls::internal("gateway")
        .load("gateway", &[])
        .unwrap();
    assert_eq!(
        list_as(&gateway, app.messaging_addr, &alice.user_id)
            .await
            .unwrap(),
        1
    );

    let handshakes_refused = || async {
        test_support::counter_value(
            &app.metrics().await,
            "grpc_server_tls_handshake_failures_total",
            "",
        )
    };
    let refused_before = handshakes_refused().await;

    // Without a certificate: the connection never carries a call.
    assert_refused(
        list_as(
            &InternalTls::plaintext(),
            app.messaging_addr,
            &alice.user_id,
        )
        .await,
    );

    // Another RealChat service's certificate (profile never calls messaging): refused.
    let profile = test_support::tls::internal("profile")
        .load("profile", &[])
        .unwrap();
    assert_refused(list_as(&profile, app.messaging_addr, &alice.user_id).await);

    // A certificate naming the gateway, from an authority messaging does not trust: refused.
    let dir = std::env::temp_dir().join(unique("stranger-ca-"));
    let stranger = TestCa::new(&dir, "stranger");
    let forged = stranger.issue_service("gateway");
    let forged = InternalTlsOptions::files(stranger.cert.clone(), forged.cert, forged.key)
        .load("gateway", &[])
        .unwrap();
    assert_refused(list_as(&forged, app.messaging_addr, &alice.user_id).await);

    // The gateway, pointed at profile's port as if it were messaging's: it refuses the server.
    assert_refused(list_as(&gateway, app.profile_addr.unwrap(), &alice.user_id).await);

    // Each of the four was refused by a server in the handshake (the servers in this process
    // share one metrics registry; a server counts a refusal as its handshake task ends, which may
    // be after the client gave up).
    test_support::eventually(
        "four refused handshakes counted",
        std::time::Duration::from_secs(5),
        || async { (handshakes_refused().await >= refused_before + 4.0).then_some(()) },
    )
    .await;

    // And the public API, whose calls all go through mutual TLS, still works end to end.
    let listed = app
        .get("/v1/conversations", Some(&alice.access_token))
        .await;
    assert_eq!(listed.status(), 200);
    std::fs::remove_dir_all(dir).ok();
}

/// A service whose certificate does not name it stops at startup, saying which name it needs.
#[test]
fn a_certificate_that_does_not_name_the_service_stops_it() {
    let error = test_support::tls::internal("profile")
        .load("messaging", &["gateway"])
        .unwrap_err();
    assert!(
        format!("{error:#}").contains("messaging.realchat.internal"),
        "{error:#}"
    );
}
