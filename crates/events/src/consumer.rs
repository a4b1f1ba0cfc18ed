//! The consumer loop every RealChat Kafka consumer uses.
//!
//! A consumer-group member receives events, hands each to a [`Handler`], and stores the event's
//! offset only once the handler succeeded (`enable.auto.offset.store=false`; stored offsets are
//! committed in the background and synchronously on shutdown). So a crash redelivers what was not
//! finished: at least once, in partition order.
//!
//! An event that keeps failing must not block its partition. A handler failure is retried with
//! capped exponential backoff up to [`ConsumerOptions::max_attempts`]; an event that cannot even be
//! decoded, or that the handler rejects as permanently bad, is not retried. A handler whose
//! database is down ([`HandlerError::Unavailable`]) is a different case: the event is fine, so it
//! is retried with capped backoff for as long as the outage lasts, and never dead-lettered for it. Either way the event
//! then goes to `<topic>.dlq` with headers naming the error, the source topic, partition and
//! offset, the attempts made and the consumer group that gave up; only once the DLQ acknowledged it is the offset stored and the
//! loop moves on.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::FutureExt as _;
use prost::Message as _;
use rdkafka::{
    Message as _,
    consumer::{CommitMode, Consumer as _, StreamConsumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::{BorrowedMessage, Header, Headers as _, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use realchat_proto::events::v1::Envelope;
use realchat_runtime::telemetry::propagation;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{
    KafkaOptions, Topic,
    kafka::close_on_own_thread,
    metrics,
    retry::{backoff, sleep_or_cancel},
    stall::{self, StallWatch},
    stats::Reporting,
};

/// A decoded event and where it came from.
#[derive(Debug, Clone)]
pub struct Event {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub envelope: Envelope,
}

/// Why a handler did not finish an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// What the handler needs is down (its database cannot be reached): nothing is wrong with
    /// the event. Retried with capped backoff until it works or the consumer stops; these
    /// attempts do not count towards the limit, so an outage never sends good events to the DLQ.
    #[error("{0:#}")]
    Unavailable(anyhow::Error),
    /// Might work next time, for a reason in the event's handling: retried up to the limit, then
    /// dead-lettered.
    #[error("{0:#}")]
    Retry(anyhow::Error),
    /// Will never work (a malformed payload): dead-lettered at once.
    #[error("{0:#}")]
    Reject(anyhow::Error),
}

/// What the loop hands events to.
pub trait Handler: Send + Sync + 'static {
    /// Processes one event. Must be idempotent: events can arrive more than once.
    fn handle<'a>(
        &'a self,
        event: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>>;

    /// Processes events that arrived together (already fetched, in partition order) as one
    /// piece of work, and returns how many of the first ones it finished. The loop stores their
    /// offsets and hands each of the rest to [`Handler::handle`] in order, with its retries and
    /// dead-lettering, so a batch that stops at an event it cannot handle changes nothing for
    /// that event or the ones after it.
    ///
    /// For handlers whose cost is per round trip rather than per event: the delivery fan-out
    /// writes a socket once for several messages. The default handles none as a batch.
    fn handle_batch<'a>(
        &'a self,
        events: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = usize> + Send + 'a>> {
        let _ = events;
        Box::pin(std::future::ready(0))
    }
}

/// Events already fetched that the loop takes together, at most.
const MAX_BATCH: usize = 256;

/// How a consumer behaves.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The consumer group.
    pub group_id: String,
    /// The topics it reads.
    pub topics: Vec<Topic>,
    /// Handler attempts per event before it is dead-lettered.
    pub max_attempts: u32,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// When notified, the consumer leaves the group and joins again as a new member, which
    /// makes the group rebalance now. For services that learn of a dead peer sooner than the
    /// broker does (the local broker, Tansu 0.6, may never expire a member that died without
    /// leaving, and keeps its partitions assigned to it).
    pub rejoin: Option<Arc<tokio::sync::Notify>>,
    /// Overrides [`KafkaOptions::fetch_wait_ms`] for this consumer. Worth raising for events
    /// nobody waits on live: a broker that holds every fetch (Tansu 0.6) is then polled less.
    pub fetch_wait: Option<Duration>,
    /// A member without partitions for this long, while events wait for the group and its
    /// committed offsets do not move, is rebuilt (see the `stall` module).
    pub stall_after: Duration,
}

impl ConsumerOptions {
    /// Defaults: 5 attempts, backoff from 100 ms up to 2 s, rebuilt after 15 s stuck without
    /// partitions.
    pub fn new(group_id: impl Into<String>, topics: Vec<Topic>) -> Self {
        Self {
            group_id: group_id.into(),
            topics,
            max_attempts: 5,
            max_backoff: Duration::from_secs(2),
            rejoin: None,
            fetch_wait: None,
            stall_after: Duration::from_secs(15),
        }
    }
}

/// How long a dead letter may wait for the broker's acknowledgement before it is sent again.
const DLQ_SEND_TIMEOUT_MS: &str = "10000";

enum Outcome {
    /// Handled or dead-lettered: store the offset.
    Done,
    /// Shutdown came first: leave the offset, the event is redelivered.
    Abandoned,
}

/// Consumes until `shutdown`, then finishes the current event, commits and leaves the group.
pub async fn run<H: Handler>(
    kafka: &KafkaOptions,
    options: ConsumerOptions,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    metrics::describe();
    let topics = kafka.topics();
    let names: Vec<String> = options.topics.iter().map(|t| topics.name(*t)).collect();
    let kafka = &match options.fetch_wait {
        Some(wait) => KafkaOptions {
            fetch_wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            ..kafka.clone()
        },
        None => kafka.clone(),
    };
    let mut consumer = subscribe(kafka, &options.group_id, &names)?;
    let mut joined_at = Instant::now();
    let mut stall = StallWatch::new(options.stall_after);
    let looper = Loop {
        topics,
        options,
        handler,
        kafka: kafka.clone(),
        shutdown: shutdown.clone(),
    };
    let group = looper.options.group_id.clone();
    tracing::info!(%group, topics = ?names, "consumer started");

    let rejoin = looper.options.rejoin.clone();
    let rejoin_requested = async || match &rejoin {
        Some(notify) => notify.notified().await,
        None => std::future::pending().await,
    };
    // Replaces the member with a new client that joins the group as a new member. The old one
    // commits what it stored (if it can) and leaves the group as it closes, on a thread of its
    // own: closing waits on the broker, for ever if it is gone.
    let rebuild =
        |consumer: &mut StreamConsumer<Reporting>, reason: &'static str| -> anyhow::Result<()> {
            let old = std::mem::replace(consumer, subscribe(kafka, &group, &names)?);
            ::metrics::counter!(metrics::REBUILDS, "group" => group.clone(), "reason" => reason)
                .increment(1);
            close_on_own_thread(move || {
                if reason != "brokers_lost" {
                    let _ = old.commit_consumer_state(CommitMode::Sync);
                }
                drop(old);
            });
            Ok(())
        };
    let mut check = tokio::time::interval(stall::CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // An error met while gathering a batch, dealt with before receiving again.
    let mut deferred: Option<KafkaError> = None;
    loop {
        let received = if let Some(error) = deferred.take() {
            Err(error)
        } else {
            tokio::select! {
            () = shutdown.cancelled() => break,
            () = rejoin_requested() => {
                tracing::info!("rejoining the group to rebalance now");
                rebuild(&mut consumer, "rejoin_requested")?;
                joined_at = Instant::now();
                stall.reset();
                continue;
            }
            _ = check.tick() => {
                let assigned = consumer.assignment().map_or(0, |a| a.count());
                ::metrics::gauge!(metrics::ASSIGNED_PARTITIONS, "group" => group.clone())
                    .set(assigned as f64);
                if stall.suspect(assigned, Instant::now())
                    && let Some(progress) = stall::look(kafka, &group, &names).await
                    && stall.stuck(progress)
                {
                    tracing::warn!(
                        waiting = progress.waiting,
                        after_secs = looper.options.stall_after.as_secs(),
                        "no partitions assigned while events wait and the group makes no \
                         progress; rebuilding the consumer"
                    );
                    rebuild(&mut consumer, "unassigned")?;
                    joined_at = Instant::now();
                    stall.reset();
                }
                continue;
            }
            received = consumer.recv() => received,
            }
        };
        let message = match received {
            Ok(message) => message,
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown))
                if joined_at.elapsed() > REJOIN_AFTER =>
            {
                // Every broker is gone. Rejoin as a new member rather than let this one heartbeat
                // into the restarted broker with a membership it no longer knows: the local broker
                // (Tansu 0.6) fails on exactly that. Stored offsets not yet committed are read
                // again (at least once).
                tracing::warn!("lost every broker; will rejoin the group as a new member");
                rebuild(&mut consumer, "brokers_lost")?;
                joined_at = Instant::now();
                stall.reset();
                continue;
            }
            Err(error) => {
                // Other broker trouble surfaces here; librdkafka reconnects by itself.
                tracing::warn!(%error, "consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // What librdkafka has already fetched comes with it: a fetch holds many events when the
        // consumer is busy, and handling them together costs less per event.
        let mut messages = vec![message];
        while messages.len() < MAX_BATCH {
            match consumer.recv().now_or_never() {
                Some(Ok(message)) => messages.push(message),
                Some(Err(error)) => {
                    deferred = Some(error);
                    break;
                }
                None => break,
            }
        }
        // The leading run of events that decode is offered to the handler as one batch.
        let mut events: Vec<Result<Event, String>> =
            messages.iter().map(|m| looper.decode(m)).collect();
        let rest = events.split_off(events.iter().take_while(|e| e.is_ok()).count());
        let events: Vec<Event> = events.into_iter().filter_map(Result::ok).collect();
        let handled = looper.process_batch(&messages[0], &events).await;
        for message in &messages[..handled] {
            store_offset(&consumer, message);
        }
        let unhandled = events.into_iter().skip(handled).map(Ok).chain(rest);
        let mut abandoned = false;
        for (message, event) in messages[handled..].iter().zip(unhandled) {
            if shutdown.is_cancelled() {
                // Not stored: redelivered to whoever consumes next.
                abandoned = true;
                break;
            }
            // Handling an event continues the trace of the request that produced it.
            let span = tracing::info_span!(
                parent: None,
                "consume",
                messaging.topic = message.topic(),
                messaging.partition = message.partition(),
                messaging.offset = message.offset(),
                otel.kind = "consumer",
            );
            if let Ok(event) = &event {
                propagation::adopt_traceparent(&span, &event.envelope.traceparent);
            }
            match looper.process(message, event).instrument(span).await {
                Outcome::Done => store_offset(&consumer, message),
                Outcome::Abandoned => {
                    abandoned = true;
                    break;
                }
            }
        }
        if abandoned {
            break;
        }
    }

    // The final commit, leaving the group and closing the client all wait on the broker, for
    // ever if it is gone: on a thread of their own, waited for a bounded time.
    let (closed, close_finished) = tokio::sync::oneshot::channel();
    close_on_own_thread(move || {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::warn!(%error, "final offset commit failed; some events will be redelivered")
            }
        }
        consumer.unsubscribe();
        drop(consumer);
        let _ = closed.send(());
    });
    if tokio::time::timeout(FINAL_CLOSE_TIMEOUT, close_finished)
        .await
        .is_err()
    {
        tracing::warn!("the broker did not let the consumer close in time; stopping without it");
    }
    tracing::info!("consumer stopped");
    Ok(())
}

/// How long stopping waits for the consumer's final commit and close.
const FINAL_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer that lost every broker is replaced at most this often.
const REJOIN_AFTER: Duration = Duration::from_secs(5);

fn store_offset(consumer: &StreamConsumer<Reporting>, message: &BorrowedMessage<'_>) {
    if let Err(error) = consumer.store_offset_from_message(message) {
        // The partition was probably revoked in a rebalance; its new owner re-reads.
        tracing::warn!(%error, "could not store an offset");
    }
}

fn subscribe(
    kafka: &KafkaOptions,
    group_id: &str,
    topic_names: &[String],
) -> anyhow::Result<StreamConsumer<Reporting>> {
    let consumer: StreamConsumer<Reporting> = kafka
        .consumer_config(group_id)
        .set("statistics.interval.ms", crate::stats::INTERVAL_MS)
        .create_with_context(Reporting::consumer(group_id))?;
    consumer.subscribe(&topic_names.iter().map(String::as_str).collect::<Vec<_>>())?;
    Ok(consumer)
}

/// The envelope a message's payload holds, or why it can never be handled (the message then
/// goes to the DLQ).
fn envelope_of(payload: Option<&[u8]>) -> Result<Envelope, String> {
    match payload.map(Envelope::decode) {
        Some(Ok(envelope)) if envelope.payload.is_some() => Ok(envelope),
        Some(Ok(_)) => Err("envelope without a payload".into()),
        Some(Err(error)) => Err(format!("undecodable envelope: {error}")),
        None => Err("empty message".into()),
    }
}

struct Loop<H> {
    topics: crate::Topics,
    options: ConsumerOptions,
    handler: Arc<H>,
    kafka: KafkaOptions,
    shutdown: CancellationToken,
}

impl<H: Handler> Loop<H> {
    /// The event a message carries, or why it can never be handled.
    fn decode(&self, message: &BorrowedMessage<'_>) -> Result<Event, String> {
        let topic = self.topics.parse(message.topic()).ok_or("unknown topic")?;
        let envelope = envelope_of(message.payload())?;
        Ok(Event {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            envelope,
        })
    }

    /// Offers the handler `events`, decoded from messages starting with `first`, as one batch;
    /// returns how many of them it finished.
    async fn process_batch(&self, first: &BorrowedMessage<'_>, events: &[Event]) -> usize {
        if events.len() < 2 {
            return 0;
        }
        let span = tracing::info_span!(
            parent: None,
            "consume_batch",
            messaging.topic = first.topic(),
            messaging.partition = first.partition(),
            messaging.offset = first.offset(),
            messaging.batch.message_count = events.len(),
            otel.kind = "consumer",
        );
        propagation::adopt_batch(
            &span,
            events.iter().map(|e| e.envelope.traceparent.as_str()),
        );
        let started = std::time::Instant::now();
        let handled = self
            .handler
            .handle_batch(events)
            .instrument(span)
            .await
            .min(events.len());
        if handled > 0 {
            let each = started.elapsed().as_secs_f64() / handled as f64;
            for event in &events[..handled] {
                let label = event.topic.logical_name();
                ::metrics::histogram!(metrics::HANDLE_SECONDS, "topic" => label).record(each);
                ::metrics::counter!(metrics::CONSUMED, "topic" => label, "outcome" => "ok")
                    .increment(1);
            }
        }
        handled
    }

    async fn process(
        &self,
        message: &BorrowedMessage<'_>,
        decoded: Result<Event, String>,
    ) -> Outcome {
        let topic_name = message.topic();
        let event = match decoded {
            Ok(event) => event,
            Err(reason) => return self.dead_letter(message, topic_name, &reason, 0).await,
        };
        let label = event.topic.logical_name();
        let mut attempt = 0;
        let mut waits = 0;
        loop {
            attempt += 1;
            let started = std::time::Instant::now();
            let result = self.handler.handle(&event).await;
            ::metrics::histogram!(metrics::HANDLE_SECONDS, "topic" => label)
                .record(started.elapsed().as_secs_f64());
            let error = match result {
                Ok(()) => {
                    ::metrics::counter!(metrics::CONSUMED, "topic" => label, "outcome" => "ok")
                        .increment(1);
                    return Outcome::Done;
                }
                Err(HandlerError::Reject(error)) => {
                    return self
                        .dead_letter(message, topic_name, &format!("{error:#}"), attempt)
                        .await;
                }
                Err(HandlerError::Retry(error)) => error,
                Err(HandlerError::Unavailable(error)) => {
                    // Not the event's fault: this attempt does not count.
                    attempt -= 1;
                    waits += 1;
                    ::metrics::counter!(metrics::CONSUMED, "topic" => label, "outcome" => "waited")
                        .increment(1);
                    let wait = backoff(waits, self.options.max_backoff);
                    tracing::warn!(event.id = %event.envelope.event_id, waits, error = format!("{error:#}"), retry_in = ?wait, "a dependency of the handler is down; waiting for it");
                    if !sleep_or_cancel(wait, &self.shutdown).await {
                        return Outcome::Abandoned;
                    }
                    continue;
                }
            };
            if attempt >= self.options.max_attempts {
                return self
                    .dead_letter(message, topic_name, &format!("{error:#}"), attempt)
                    .await;
            }
            ::metrics::counter!(metrics::CONSUMED, "topic" => label, "outcome" => "retried")
                .increment(1);
            let wait = backoff(attempt, self.options.max_backoff);
            tracing::warn!(event.id = %event.envelope.event_id, attempt, error = format!("{error:#}"), retry_in = ?wait, "handler failed");
            if !sleep_or_cancel(wait, &self.shutdown).await {
                return Outcome::Abandoned;
            }
        }
    }

    /// Writes the event to its DLQ, retrying until the DLQ acknowledges (or shutdown).
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        topic_name: &str,
        error: &str,
        attempts: u32,
    ) -> Outcome {
        let dlq_topic = format!("{topic_name}.dlq");
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let attempts_text = attempts.to_string();
        tracing::error!(dlq = %dlq_topic, error, attempts, "giving up on an event, sending it to the DLQ");
        // Dead letters are rare: a producer per event keeps no producer id across broker restarts.
        let mut dlq = None;
        let mut wait_attempt = 0;
        loop {
            let mut headers = OwnedHeaders::new();
            if let Some(original) = message.headers() {
                for header in original.iter() {
                    headers = headers.insert(Header {
                        key: header.key,
                        value: header.value,
                    });
                }
            }
            let headers = headers
                .insert(Header {
                    key: "dlq-error",
                    value: Some(error),
                })
                .insert(Header {
                    key: "dlq-source-topic",
                    value: Some(topic_name),
                })
                .insert(Header {
                    key: "dlq-source-partition",
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: "dlq-source-offset",
                    value: Some(offset.as_str()),
                })
                .insert(Header {
                    key: "dlq-attempts",
                    value: Some(attempts_text.as_str()),
                })
                .insert(Header {
                    key: "dlq-group",
                    value: Some(self.options.group_id.as_str()),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&dlq_topic).headers(headers);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            if dlq.is_none() {
                // The relay's producer has no per-message timeout (it bounds its rounds itself);
                // a dead letter gets one, so a broker that went away fails the send and it is
                // retried here, instead of the loop waiting on it for ever.
                dlq = self
                    .kafka
                    .producer_config()
                    .set("message.timeout.ms", DLQ_SEND_TIMEOUT_MS)
                    .create::<FutureProducer>()
                    .ok();
            }
            let Some(producer) = &dlq else {
                tokio::time::sleep(backoff(1, self.options.max_backoff)).await;
                continue;
            };
            let sent = tokio::select! {
                () = self.shutdown.cancelled() => return Outcome::Abandoned,
                sent = producer.send(record, Duration::from_secs(5)) => sent,
            };
            match sent {
                Ok(_) => {
                    if let Some(done) = dlq.take() {
                        // Closing a producer waits for its queue.
                        close_on_own_thread(move || drop(done));
                    }
                    let label = self
                        .topics
                        .parse(topic_name)
                        .map_or("unknown", Topic::logical_name);
                    ::metrics::counter!(metrics::CONSUMED, "topic" => label, "outcome" => "dead_lettered").increment(1);
                    return Outcome::Done;
                }
                Err((error, _)) => {
                    wait_attempt += 1;
                    if let Some(failed) = dlq.take() {
                        close_on_own_thread(move || drop(failed));
                    }
                    tracing::warn!(%error, "the DLQ did not acknowledge; retrying");
                    let wait = backoff(wait_attempt, self.options.max_backoff);
                    if !sleep_or_cancel(wait, &self.shutdown).await {
                        return Outcome::Abandoned;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod decoding {
    use proptest::prelude::*;
    use realchat_proto::events::v1::{MessageCreated, UserRegistered, envelope::Payload};

    use super::*;

    fn payload() -> impl Strategy<Value = Payload> {
        prop_oneof![
            (any::<String>(), any::<String>(), any::<i64>()).prop_map(|(user_id, username, at)| {
                Payload::UserRegistered(UserRegistered {
                    user_id,
                    username,
                    registered_at_ms: at,
                })
            }),
            (
                any::<String>(),
                any::<i64>(),
                any::<String>(),
                prop::collection::vec(any::<String>(), 0..4)
            )
                .prop_map(|(conversation_id, seq, body, member_ids)| {
                    Payload::MessageCreated(MessageCreated {
                        conversation_id,
                        seq,
                        body,
                        member_ids,
                        ..MessageCreated::default()
                    })
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever bytes a topic holds, decoding says what they are or why not; it never
        /// panics (the loop would die with the partition's events behind it).
        #[test]
        fn any_bytes_decode_or_say_why(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Err(why) = envelope_of(Some(&bytes)) {
                prop_assert!(why == "envelope without a payload" || why.starts_with("undecodable envelope"), "{why}");
            }
        }

        /// An envelope survives the wire whole, however odd its fields.
        #[test]
        fn every_envelope_with_a_payload_decodes_as_it_was_encoded(
            event_id in any::<String>(),
            event_type in any::<String>(),
            occurred_at_ms in any::<i64>(),
            payload in payload(),
        ) {
            let envelope = Envelope {
                event_id,
                event_type,
                occurred_at_ms,
                traceparent: String::new(),
                payload: Some(payload),
            };
            prop_assert_eq!(envelope_of(Some(&envelope.encode_to_vec())).unwrap(), envelope);
        }
    }

    #[test]
    fn an_empty_message_or_an_envelope_without_a_payload_is_refused() {
        assert_eq!(envelope_of(None).unwrap_err(), "empty message");
        let bare = Envelope::default().encode_to_vec();
        assert_eq!(
            envelope_of(Some(&bare)).unwrap_err(),
            "envelope without a payload"
        );
    }
}
