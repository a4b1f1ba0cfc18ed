//! One send is one trace, from the gateway to every socket it reaches: the spans each hop exports
//! and how they hang together.
//!
//! A test binary of its own: a process has one tracer provider, installed once by
//! `telemetry::init`, and here it exports to a receiver in this process that no other test's
//! spans reach.

#![allow(clippy::unwrap_used)]

use std::{collections::HashSet, sync::Arc, time::Duration};

use realchat_events::Topic;
use realchat_runtime::{
    config::{CommonOptions, LogFormat},
    telemetry::{self, TelemetryGuard},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{
    Session, TestApp,
    otlp::{ReceivedSpan, SpanKind, TraceReceiver},
};

const SOON: Duration = Duration::from_secs(20);

/// What is exported is what the filter lets through: the services' info spans. (Their info logs
/// print too; the test harness does not capture other threads' output.)
const FILTER: &str = "warn,realchat_gateway=info,realchat_runtime=info,realchat_messaging=info,\
                      realchat_outbox=info,realchat_events=info,realchat_delivery=info";

const SEND: &str = "/realchat.messaging.v1.Messaging/Send";

/// A fresh caller context: its trace id, its span id, and the `traceparent` naming them.
fn caller() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let traceparent = format!("00-{trace_id}-{span_id}-01");
    (trace_id, span_id, traceparent)
}

/// `POST` as `session`, with the caller's `traceparent`.
async fn post_traced(
    app: &TestApp,
    session: &Session,
    path: &str,
    traceparent: &str,
    body: &Value,
) -> Value {
    let response = app
        .http
        .post(format!("{}{path}", app.base))
        .bearer_auth(&session.access_token)
        .header("traceparent", traceparent)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// Exports what ended so far and waits until the trace `trace_id` holds what `complete` wants;
/// on timeout, fails showing what it holds.
async fn trace_when(
    receiver: &TraceReceiver,
    guard: &Arc<TelemetryGuard>,
    trace_id: &str,
    what: &str,
    complete: impl Fn(&[ReceivedSpan]) -> bool,
) -> Vec<ReceivedSpan> {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        // The exporter's flush blocks, and its gRPC client runs on this runtime.
        let guard = Arc::clone(guard);
        let flushed = tokio::task::spawn_blocking(move || guard.flush())
            .await
            .unwrap();
        let spans = receiver.trace(trace_id);
        if flushed.is_ok() && complete(&spans) {
            return spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {SOON:?} waiting for {what} (last flush: {flushed:?}); the trace has\n{}",
            tree(&spans)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(spans: &[ReceivedSpan], name: &str) -> usize {
    spans.iter().filter(|s| s.name == name).count()
}

/// The one span named `name`.
fn the<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span in\n{}", tree(spans));
    found[0]
}

/// The trace as an indented tree, for failure messages.
fn tree(spans: &[ReceivedSpan]) -> String {
    fn walk(spans: &[ReceivedSpan], parent: &str, depth: usize, out: &mut String) {
        for span in spans.iter().filter(|s| s.parent_span_id == parent) {
            // What the spans say, without where in the code and on which thread.
            let mut attributes: Vec<String> = span
                .attributes
                .iter()
                .filter(|(k, _)| {
                    !(k.starts_with("code.")
                        || k.starts_with("thread.")
                        || ["busy_ns", "idle_ns", "target"].contains(&k.as_str()))
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            attributes.sort();
            out.push_str(&format!(
                "{}{} {} {:?}{} links={:?} {}\n",
                "  ".repeat(depth),
                span.name,
                span.span_id,
                span.kind,
                if span.error { " error" } else { "" },
                span.links,
                attributes.join(" ")
            ));
            walk(spans, &span.span_id, depth + 1, out);
        }
    }
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut out = String::new();
    let mut roots: Vec<&str> = spans
        .iter()
        .filter(|s| !ids.contains(s.parent_span_id.as_str()))
        .map(|s| s.parent_span_id.as_str())
        .collect();
    roots.sort_unstable();
    roots.dedup();
    for root in roots {
        out.push_str(&format!("(parent {root:?})\n"));
        walk(spans, root, 1, &mut out);
    }
    out
}

/// Asserts `child`'s parent is `parent`.
fn assert_child(spans: &[ReceivedSpan], child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        child.parent_span_id,
        parent.span_id,
        "{} {} should be a child of {} {} in\n{}",
        child.name,
        child.span_id,
        parent.name,
        parent.span_id,
        tree(spans)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_is_one_trace_from_the_gateway_through_kafka_to_both_sockets() {
    let receiver = TraceReceiver::start().await;
    let guard = Arc::new(
        telemetry::init(
            "realchat-test",
            &CommonOptions {
                log_filter: FILTER.to_owned(),
                log_format: LogFormat::Human,
                shutdown_grace_secs: 5,
                otlp_endpoint: Some(receiver.endpoint()),
            },
        )
        .unwrap(),
    );
    let app = TestApp::builder().delivery_replicas(2).spawn().await;
    let messages_topic = app.kafka.topics().name(Topic::Messages);
    let (alice, bob) = (app.member().await, app.member().await);

    // The conversation, in a trace of its own; its member.added event is consumed before the
    // send, so the send's event is handled alone.
    let (created_trace, _, traceparent) = caller();
    let conversation = post_traced(
        &app,
        &alice,
        "/v1/conversations",
        &traceparent,
        &json!({"kind": "direct", "member_ids": [bob.user_id]}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    trace_when(
        &receiver,
        &guard,
        &created_trace,
        "delivery to consume member.added",
        |spans| {
            spans.iter().any(|s| {
                s.name == "consume" && s.attribute("messaging.topic") == Some(&messages_topic)
            })
        },
    )
    .await;
    // A request without a `traceparent` starts a trace (the registrations, exported by now).
    let started: Vec<ReceivedSpan> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.name == "http" && s.attribute("http.route") == Some("/v1/auth/register"))
        .collect();
    assert_eq!(started.len(), 2, "{started:?}");
    assert!(
        started.iter().all(|s| s.parent_span_id.is_empty()),
        "{started:?}"
    );

    // Alice and Bob on different replicas: whichever consumes the event forwards it to the other.
    let mut alice_socket = app.socket_to(0, &alice).await;
    let mut bob_socket = app.socket_to(1, &bob).await;
    let (trace_id, caller_span, traceparent) = caller();
    let sent = post_traced(
        &app,
        &alice,
        &format!("/v1/conversations/{conversation}/messages"),
        &traceparent,
        &json!({"client_msg_id": uuid::Uuid::new_v4().to_string(), "body": "traced"}),
    )
    .await;
    assert_eq!(sent["seq"], 1);
    for socket in [&mut alice_socket, &mut bob_socket] {
        let frame = socket.expect("message", SOON).await;
        assert_eq!(frame["message"]["body"], "traced");
    }

    let spans = trace_when(
        &receiver,
        &guard,
        &trace_id,
        "every hop's span of the send",
        |spans| {
            ["http", "grpc", "send_batch", "consume", "fanout", "forward"]
                .iter()
                .all(|name| count(spans, name) >= 1)
                && spans.iter().any(|s| s.name == "produce" && !s.error)
                && count(spans, "socket_write") >= 2
        },
    )
    .await;
    let spans = &spans[..];

    // gateway: the request continues the caller's trace.
    let http = the(spans, "http");
    assert_eq!(http.parent_span_id, caller_span, "{}", tree(spans));
    assert_eq!(
        http.attribute("http.route"),
        Some("/v1/conversations/{id}/messages")
    );
    assert_eq!(http.attribute("http.request.method"), Some("POST"));
    assert_eq!(http.attribute("http.response.status_code"), Some("201"));
    assert_eq!(http.kind, SpanKind::Server);

    // messaging: the call, across gRPC, and the transaction that stored the send.
    let grpc = the(spans, "grpc");
    assert_eq!(grpc.attribute("rpc.method"), Some(SEND));
    assert_eq!(grpc.kind, SpanKind::Server);
    assert_child(spans, grpc, http);
    let stored = the(spans, "send_batch");
    assert_child(spans, stored, grpc);

    // Kafka: the relay's produce and delivery's consume both continue the context the event
    // carries (the call that wrote it), on the messages topic. (A round the broker failed would
    // add a failed produce, and the relay publishes the row again.)
    let produced: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "produce").collect();
    let attempts = produced.len();
    for produce in &produced {
        assert_child(spans, produce, grpc);
        assert_eq!(produce.kind, SpanKind::Producer);
        assert_eq!(
            produce.attribute("messaging.topic"),
            Some(&messages_topic[..])
        );
        assert_eq!(produce.attribute("event.type"), Some("message.created"));
    }
    assert_eq!(
        produced.iter().filter(|p| !p.error).count(),
        1,
        "one acknowledged produce in\n{}",
        tree(spans)
    );
    let consume = the(spans, "consume");
    assert_child(spans, consume, grpc);
    assert_eq!(consume.kind, SpanKind::Consumer);
    assert_eq!(
        consume.attribute("messaging.topic"),
        Some(&messages_topic[..])
    );

    // delivery: the consuming replica's fan-out, the other replica's forward, and one socket
    // write on each: the consumer's own socket under its fan-out, the other under the forward.
    let fanout = the(spans, "fanout");
    assert_child(spans, fanout, consume);
    let forward = the(spans, "forward");
    assert_child(spans, forward, fanout);
    assert_eq!(forward.kind, SpanKind::Consumer);
    let writes: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == "socket_write").collect();
    assert_eq!(writes.len(), 2, "{}", tree(spans));
    let local = writes
        .iter()
        .find(|w| w.parent_span_id == fanout.span_id)
        .unwrap_or_else(|| panic!("no socket write under the fan-out in\n{}", tree(spans)));
    let remote = writes
        .iter()
        .find(|w| w.parent_span_id == forward.span_id)
        .unwrap_or_else(|| panic!("no socket write under the forward in\n{}", tree(spans)));
    let users: HashSet<&str> = [local, remote]
        .iter()
        .filter_map(|w| w.attribute("user.id"))
        .collect();
    assert_eq!(
        users,
        HashSet::from([alice.user_id.as_str(), bob.user_id.as_str()])
    );
    assert!(
        writes
            .iter()
            .all(|w| w.attribute("message.seq") == Some("1"))
    );

    // Nothing else in the trace: every span hangs from the caller's, and none is linked in from
    // another trace.
    assert_eq!(spans.len(), 8 + attempts, "{}", tree(spans));
    assert!(spans.iter().all(|s| s.links.is_empty()), "{}", tree(spans));

    drop(app);
    let guard = Arc::try_unwrap(guard).unwrap();
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .unwrap();
}
