//! The consumer loop on a real broker: bounded retries, the DLQ, order, commits.

#![allow(clippy::unwrap_used)]

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use prost::Message as _;
use realchat_events::{
    Topic,
    consumer::{self, ConsumerOptions, Event, Handler, HandlerError},
};
use realchat_proto::events::v1::{Envelope, UserRegistered, envelope::Payload};
use test_support::{eventually, kafka};
use tokio_util::sync::CancellationToken;

/// Fails every attempt at events whose user is `doomed`, answers "unavailable" to the first
/// `outage` attempts at any event, and records everything it sees.
#[derive(Default)]
struct Recorder {
    doomed: String,
    outage: AtomicU32,
    seen: Mutex<Vec<String>>,
}

impl Handler for Recorder {
    fn handle<'a>(
        &'a self,
        event: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>> {
        Box::pin(async move {
            let Some(Payload::UserRegistered(user)) = &event.envelope.payload else {
                return Ok(());
            };
            self.seen.lock().unwrap().push(user.username.clone());
            let down = self
                .outage
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if down {
                return Err(HandlerError::Unavailable(anyhow::anyhow!(
                    "the database cannot be reached"
                )));
            }
            if user.username == self.doomed {
                return Err(HandlerError::Retry(anyhow::anyhow!("the database said no")));
            }
            Ok(())
        })
    }
}

fn registered(username: &str) -> Vec<u8> {
    Envelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: "user.registered".into(),
        occurred_at_ms: 1,
        traceparent: String::new(),
        payload: Some(Payload::UserRegistered(UserRegistered {
            user_id: uuid::Uuid::now_v7().to_string(),
            username: username.into(),
            registered_at_ms: 1,
        })),
    }
    .encode_to_vec()
}

/// Runs a consumer with `handler` until the handler has seen `username`'s event, then stops it
/// (which commits what it stored).
async fn consume_until_seen(
    kafka: &realchat_events::KafkaOptions,
    consumer_options: ConsumerOptions,
    handler: &Arc<Recorder>,
    username: &str,
) {
    let seen = || {
        handler
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|seen| seen == username)
    };
    consume_until(kafka, consumer_options, handler, username, seen).await;
}

/// Runs a consumer with `handler` until `done`, then stops it (which commits what it stored).
async fn consume_until<H: Handler>(
    kafka: &realchat_events::KafkaOptions,
    consumer_options: ConsumerOptions,
    handler: &Arc<H>,
    username: &str,
    done: impl Fn() -> bool,
) {
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (kafka, handler, stop) = (kafka.clone(), handler.clone(), stop.clone());
        async move { consumer::run(&kafka, consumer_options, handler, stop).await }
    });
    eventually(
        &format!("{username}'s event to be handled"),
        Duration::from_secs(30),
        || async { done().then_some(()) },
    )
    .await;
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// Takes events in batches up to (not including) the one named `refused`, which only
/// [`Handler::handle`] gets; logs what each path handled, in order.
#[derive(Default)]
struct Batcher {
    refused: String,
    log: Mutex<Vec<(&'static str, String)>>,
}

fn username(event: &Event) -> String {
    match &event.envelope.payload {
        Some(Payload::UserRegistered(user)) => user.username.clone(),
        _ => String::new(),
    }
}

impl Handler for Batcher {
    fn handle<'a>(
        &'a self,
        event: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>> {
        Box::pin(async move {
            self.log.lock().unwrap().push(("one", username(event)));
            Ok(())
        })
    }

    fn handle_batch<'a>(
        &'a self,
        events: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = usize> + Send + 'a>> {
        Box::pin(async move {
            let taken: Vec<String> = events
                .iter()
                .map(username)
                .take_while(|name| *name != self.refused)
                .collect();
            let mut log = self.log.lock().unwrap();
            for name in &taken {
                log.push(("batch", name.clone()));
            }
            taken.len()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_events_are_offered_as_a_batch_and_what_it_leaves_is_handled_one_by_one_in_order() {
    let options = kafka::fresh_topics().await;
    let names = ["a", "b", "c", "refused", "d", "e"];
    for name in names {
        kafka::produce_raw(&options, Topic::Users, "k", &registered(name)).await;
    }
    let handler = Arc::new(Batcher {
        refused: "refused".into(),
        ..Batcher::default()
    });
    let group = test_support::unique("group-");
    let done = || {
        handler
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|(_, name)| name == "e")
    };
    let consumer_options = ConsumerOptions::new(group.clone(), vec![Topic::Users]);
    consume_until(&options, consumer_options, &handler, "e", done).await;

    let log = handler.log.lock().unwrap().clone();
    let order: Vec<&str> = log.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(order, names, "each event once, in partition order: {log:?}");
    assert!(
        log.iter().filter(|(how, _)| *how == "batch").count() >= 2,
        "events fetched together were offered together: {log:?}"
    );
    assert!(
        log.contains(&("one", "refused".to_string())),
        "the event the batch stopped at went through handle: {log:?}"
    );

    // Batched and single events alike were committed: the group's next member sees only news.
    kafka::produce_raw(&options, Topic::Users, "k", &registered("fresh")).await;
    let again = Arc::new(Batcher::default());
    let done = || {
        again
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|(_, name)| name == "fresh")
    };
    let consumer_options = ConsumerOptions::new(group, vec![Topic::Users]);
    consume_until(&options, consumer_options, &again, "fresh", done).await;
    let log = again.log.lock().unwrap().clone();
    assert_eq!(log.len(), 1, "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_retried_a_bounded_number_of_times_then_parked_and_the_partition_moves_on()
 {
    let options = kafka::fresh_topics().await;
    // Same key, so same partition: "after" really is behind "doomed".
    kafka::produce_raw(&options, Topic::Users, "k", &registered("before")).await;
    kafka::produce_raw(&options, Topic::Users, "k", &registered("doomed")).await;
    kafka::produce_raw(&options, Topic::Users, "k", &registered("after")).await;
    let handler = Arc::new(Recorder {
        doomed: "doomed".into(),
        ..Recorder::default()
    });
    let group = test_support::unique("group-");
    let mut consumer_options = ConsumerOptions::new(group.clone(), vec![Topic::Users]);
    consumer_options.max_attempts = 3;
    consumer_options.max_backoff = Duration::from_millis(200);
    consume_until_seen(&options, consumer_options, &handler, "after").await;

    assert_eq!(
        *handler.seen.lock().unwrap(),
        ["before", "doomed", "doomed", "doomed", "after"]
    );
    let parked = kafka::read_dlq(&options, Topic::Users, 1, Duration::from_secs(20)).await;
    assert_eq!(parked.len(), 1);
    let record = &parked[0];
    assert_eq!(record.header("dlq-attempts"), Some("3"));
    assert_eq!(record.header("dlq-error"), Some("the database said no"));
    assert_eq!(record.header("dlq-source-offset"), Some("1"));
    assert_eq!(record.key.as_deref(), Some("k"));
    let Some(Payload::UserRegistered(user)) = record.envelope().payload else {
        panic!("payload")
    };
    assert_eq!(user.username, "doomed");

    // Everything was committed on shutdown: the group's next member starts after "after".
    let again = Arc::new(Recorder::default());
    kafka::produce_raw(&options, Topic::Users, "k", &registered("fresh")).await;
    let consumer_options = ConsumerOptions::new(group, vec![Topic::Users]);
    consume_until_seen(&options, consumer_options, &again, "fresh").await;
    assert_eq!(
        *again.seen.lock().unwrap(),
        ["fresh"],
        "nothing committed may be redelivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_database_is_down_waits_for_it_however_long_and_is_never_dead_lettered() {
    let options = kafka::fresh_topics().await;
    kafka::produce_raw(&options, Topic::Users, "k", &registered("patient")).await;
    kafka::produce_raw(&options, Topic::Users, "k", &registered("after")).await;
    // Down for twice as many attempts as an event may fail before it is dead-lettered.
    let handler = Arc::new(Recorder {
        outage: AtomicU32::new(6),
        ..Recorder::default()
    });
    let mut consumer_options =
        ConsumerOptions::new(test_support::unique("group-"), vec![Topic::Users]);
    consumer_options.max_attempts = 3;
    consumer_options.max_backoff = Duration::from_millis(100);
    consume_until_seen(&options, consumer_options, &handler, "after").await;
    let seen = handler.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 8, "{seen:?}");
    assert!(seen[..7].iter().all(|u| u == "patient"), "{seen:?}");
    assert_eq!(seen[7], "after");
    let parked = kafka::read_dlq(&options, Topic::Users, 1, Duration::from_secs(3)).await;
    assert!(parked.is_empty(), "nothing was wrong with the event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_tells_how_many_events_wait_for_a_group_and_how_far_it_committed() {
    // What a consumer stuck without partitions looks at before it rebuilds itself.
    let options = kafka::fresh_topics().await;
    for name in ["p1", "p2", "p3"] {
        kafka::produce_raw(&options, Topic::Users, name, &registered(name)).await;
    }
    let group = test_support::unique("group-");
    let before = realchat_events::group_progress(&options, &group, &[Topic::Users])
        .await
        .unwrap();
    assert_eq!(
        before,
        realchat_events::GroupProgress {
            waiting: 3,
            committed: 0
        }
    );

    let handler = Arc::new(Recorder::default());
    let consumer_options = ConsumerOptions::new(group.clone(), vec![Topic::Users]);
    let all_three = || handler.seen.lock().unwrap().len() >= 3;
    consume_until(&options, consumer_options, &handler, "p3", all_three).await;

    let after = realchat_events::group_progress(&options, &group, &[Topic::Users])
        .await
        .unwrap();
    assert_eq!(
        after,
        realchat_events::GroupProgress {
            waiting: 0,
            committed: 3
        }
    );
}
