//! The outbox relay: outbox rows to Kafka, in order, deleted only once acknowledged.
//!
//! # How order is kept
//!
//! Rows of one key (a conversation) are written by transactions that serialise on the key's own
//! row lock, so their `id`s grow in commit order. The relay always reads the *oldest rows present*
//! (`ORDER BY id`), never "rows after the last id I saw": such a cursor would skip a row whose
//! transaction took its id early but committed late. It hands a batch to the idempotent producer
//! in `id` order, waits for every acknowledgement, then deletes exactly the acknowledged rows. The
//! idempotent producer keeps per-partition order through its own retries. librdkafka's own
//! per-message timeout is off: a message timing out on its own could fail while a later message of
//! the same key still got through. Instead the round has one deadline; whatever is unacknowledged
//! then is purged together with the producer, so what stays behind is always a suffix per key,
//! published again (in order) next round.
//!
//! # Why one publisher
//!
//! Two relays reading the same rows would interleave a key's events on the broker. So each database
//! has one publishing relay at a time, elected with a session-level advisory lock held on a
//! dedicated connection; the others stand by, retrying the lock every second, and the first to get
//! it takes over when the leader's process or connection dies (PostgreSQL releases the lock with
//! the session). Every replica runs a relay, so there is no single point of failure.
//!
//! # Waking up
//!
//! [`crate::enqueue`] sends `NOTIFY realchat_outbox`, which PostgreSQL delivers at commit, so the
//! leader publishes within milliseconds of a commit. A slow poll covers notifications lost while
//! the listening connection was reconnecting.
//!
//! # Failures
//!
//! Unacknowledged rows stay in the table, so a broker outage only grows the backlog: the relay
//! retries with capped exponential backoff, and when the broker returns the backlog drains in
//! order. A crash between the acknowledgement and the delete publishes those rows again: consumers
//! see a duplicate with the same event id (at least once).
//!
//! A row the producer refuses outright (a topic this relay does not know, as during a rolling
//! upgrade that added one; a record over the broker's size limit) cannot be fixed by retrying, and
//! must not hold up everyone else's events. It stays in the table, counted
//! (`outbox_refused_total`) and logged; its key's later rows stay behind it, so the key keeps its
//! order; and that key is left out of the next rounds for a while ([`HELD_FOR`]) before the relay
//! tries it again. Other keys are published as usual, without backoff.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer as _},
};
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use realchat_events::{
    KafkaOptions, Topic, Topics,
    kafka::{BrokerWatch, WatchedProducer},
    retry::{backoff, sleep_or_cancel},
};
use realchat_runtime::telemetry::propagation;

use crate::{NOTIFY_CHANNEL, metrics};

/// How a relay behaves.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Rows per round.
    pub batch_size: i64,
    /// Fallback poll when no notification arrives.
    pub poll_interval: Duration,
    /// Advisory-lock key electing the publisher; one per database.
    pub lock_key: i64,
    /// Longest wait between attempts while the broker fails.
    pub max_backoff: Duration,
    /// How long the relay keeps publishing after shutdown starts.
    pub flush_timeout: Duration,
    /// How long a round waits for the broker's acknowledgements before it gives up on the rest.
    pub ack_timeout: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(5),
            lock_key: 0x5245_414c_4f55_5442, // "REALOUTB"
            max_backoff: Duration::from_secs(2),
            flush_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(10),
        }
    }
}

/// One outbox row as the relay reads it.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: i64,
    topic: String,
    key: String,
    event_id: Uuid,
    event_type: String,
    traceparent: String,
    payload: Vec<u8>,
    created_at: OffsetDateTime,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Rows read.
    pub fetched: usize,
    /// Rows acknowledged by the broker (and deleted, unless asked not to).
    pub published: usize,
    /// Rows the broker did not acknowledge; still in the table.
    pub failed: usize,
    /// Rows refused by the producer, and the later rows of their keys; still in the table.
    pub held: usize,
}

/// How long a key whose row the producer refused is left out of the relay's rounds.
pub const HELD_FOR: Duration = Duration::from_secs(60);

/// Publishes one database's outbox to Kafka.
pub struct Relay {
    pool: PgPool,
    topics: Topics,
    producer: WatchedProducer,
    /// Whether records repeat the envelope's id, type and trace context as headers.
    headers: bool,
    options: RelayOptions,
    /// Keys whose oldest row the producer refused, left out of the rounds until the instant.
    held: HashMap<String, Instant>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay for the outbox in `pool`'s database.
    pub fn new(pool: PgPool, kafka: &KafkaOptions, options: RelayOptions) -> anyhow::Result<Self> {
        metrics::describe();
        Ok(Self {
            pool,
            topics: kafka.topics(),
            producer: WatchedProducer::new(kafka)?,
            headers: kafka.record_headers,
            options,
            held: HashMap::new(),
        })
    }

    /// Stands by or publishes until `shutdown`, then flushes what it can within the flush timeout.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let sampler = sample_backlog(self.pool.clone(), shutdown.clone());
        let relay = async {
            let mut attempt = 0;
            while !shutdown.is_cancelled() {
                match self.lead_when_elected(&shutdown).await {
                    Ok(()) => attempt = 0,
                    Err(error) => {
                        attempt += 1;
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "outbox relay lost its database, retrying"
                        );
                        sleep_or_cancel(backoff(attempt, self.options.max_backoff), &shutdown)
                            .await;
                    }
                }
            }
        };
        tokio::join!(relay, sampler);
        Ok(())
    }

    /// Waits for the publisher lock, then publishes until shutdown or a database error.
    async fn lead_when_elected(&mut self, shutdown: &CancellationToken) -> Result<(), sqlx::Error> {
        // A connection of its own: the lock lives exactly as long as this session.
        let mut conn = self.pool.acquire().await?.detach();
        loop {
            let elected: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(self.options.lock_key)
                .fetch_one(&mut conn)
                .await?;
            if elected {
                break;
            }
            if !sleep_or_cancel(Duration::from_secs(1), shutdown).await {
                return Ok(());
            }
        }
        tracing::info!("this relay is now publishing the outbox");
        ::metrics::gauge!(metrics::OUTBOX_LEADER).set(1.0);
        let result = self.lead(&mut conn, shutdown).await;
        ::metrics::gauge!(metrics::OUTBOX_LEADER).set(0.0);
        // Closing the session releases the lock for a standby.
        let _ = sqlx::Connection::close(conn).await;
        result
    }

    async fn lead(
        &mut self,
        conn: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        let mut listener = listen(&self.pool).await;
        let mut failing_rounds = 0;
        loop {
            if shutdown.is_cancelled() {
                return self.flush(conn).await;
            }
            let round = self.round(conn, true).await?;
            if round.failed > 0 {
                failing_rounds += 1;
                let wait = backoff(failing_rounds, self.options.max_backoff);
                tracing::warn!(failed = round.failed, retry_in = ?wait, "the broker did not acknowledge every event; they stay in the outbox");
                sleep_or_cancel(wait, shutdown).await;
                continue;
            }
            failing_rounds = 0;
            if round.fetched as i64 >= self.options.batch_size {
                continue; // more waiting
            }
            wait_for_work(
                &mut listener,
                &self.pool,
                self.options.poll_interval,
                shutdown,
            )
            .await;
        }
    }

    /// Publishes what is left, for at most the flush timeout.
    async fn flush(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let deadline = tokio::time::Instant::now() + self.options.flush_timeout;
        let flushed = tokio::time::timeout_at(deadline, async {
            loop {
                let round = self.round(conn, true).await?;
                if round.fetched == 0 {
                    return Ok::<_, sqlx::Error>(());
                }
                if round.failed > 0 {
                    // A fresh producer is already in place; try again while the budget lasts.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
        .await;
        match flushed {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    "outbox not flushed before the flush timeout; the next relay publishes the rest"
                );
                Ok(())
            }
        }
    }

    /// Reads the oldest rows, publishes them in order, waits for the acknowledgements, and
    /// (when `delete`) removes the acknowledged ones.
    async fn round(&mut self, conn: &mut PgConnection, delete: bool) -> Result<Round, sqlx::Error> {
        let started = std::time::Instant::now();
        self.held.retain(|_, until| *until > started);
        let held: Vec<&str> = self.held.keys().map(String::as_str).collect();
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, topic, key, event_id, event_type, traceparent, payload, created_at
             FROM outbox WHERE key <> ALL($2) ORDER BY id LIMIT $1",
        )
        .bind(self.options.batch_size)
        .bind(&held)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            return Ok(Round::default());
        }

        let selected = started.elapsed();
        // One producer for the whole round, so a key's rows share one partition queue. Hand
        // everything over first, in id order, then wait: one round trip per batch, not per row.
        let producer = self.producer.current();
        let names: Vec<Option<String>> = rows
            .iter()
            .map(|row| Topic::from_logical_name(&row.topic).map(|t| self.topics.name(t)))
            .collect();
        let mut pending = Vec::with_capacity(rows.len());
        // Keys with a refused row: their later rows stay behind it.
        let mut refused: HashSet<&str> = HashSet::new();
        for (row, name) in rows.iter().zip(&names) {
            if refused.contains(row.key.as_str()) {
                pending.push(if self.held.contains_key(&row.key) {
                    Pending::Held
                } else {
                    Pending::NotSent
                });
                continue;
            }
            // The event's publication, in the trace of the request that wrote it (its
            // `traceparent`), from handing it to the producer until the broker acknowledged it.
            let span = tracing::info_span!(
                parent: None,
                "produce",
                messaging.topic = name.as_deref().unwrap_or(row.topic.as_str()),
                event.id = %row.event_id,
                event.type = %row.event_type,
                otel.kind = "producer",
                otel.status_code = tracing::field::Empty,
            );
            propagation::adopt_traceparent(&span, &row.traceparent);
            let outcome = match name {
                Some(name) => Self::enqueue(producer, row, name, self.headers).await,
                None => Err(Refusal::Permanent(format!(
                    "the topic {:?} is not one this relay knows",
                    row.topic
                ))),
            };
            if outcome.is_err() {
                span.record("otel.status_code", "error");
            }
            pending.push(match outcome {
                Ok(delivery) => Pending::Sent(delivery, span),
                Err(Refusal::Transient) => {
                    // Its key's later rows must not overtake it: they wait for the next round.
                    refused.insert(row.key.as_str());
                    Pending::NotSent
                }
                Err(Refusal::Permanent(reason)) => {
                    tracing::error!(outbox.id = row.id, event.id = %row.event_id, topic = %row.topic, key = %row.key, reason, "the producer refuses this outbox row; it and its key's later rows stay in the table, and the key is left out for a while");
                    ::metrics::counter!(metrics::OUTBOX_REFUSED, "topic" => row.topic.clone())
                        .increment(1);
                    refused.insert(row.key.as_str());
                    self.held.insert(row.key.clone(), started + HELD_FOR);
                    Pending::Held
                }
            });
        }
        // librdkafka never times messages out itself (an individual timeout could fail a row and
        // let a later row of the same key through). The relay waits up to its own deadline; what
        // is not acknowledged by then is purged with the producer below, and since a partition
        // sends its oldest messages first, whatever did land is a prefix per key.
        let deadline = tokio::time::Instant::now() + self.options.ack_timeout;
        let mut acked = Vec::with_capacity(rows.len());
        let mut failed_by_topic: HashMap<&str, u64> = HashMap::new();
        let mut held = 0;
        for (row, delivery) in rows.iter().zip(pending) {
            let outcome = match delivery {
                Pending::Sent(future, span) => {
                    let outcome = match tokio::time::timeout_at(deadline, future).await {
                        Ok(result) => result
                            .map_err(|_| KafkaError::Canceled)
                            .and_then(|r| r.map_err(|(e, _)| e)),
                        Err(_) => Err(KafkaError::MessageProduction(
                            RDKafkaErrorCode::MessageTimedOut,
                        )),
                    };
                    if outcome.is_err() {
                        span.record("otel.status_code", "error");
                    }
                    outcome
                }
                Pending::NotSent => Err(KafkaError::Canceled),
                Pending::Held => {
                    held += 1;
                    continue;
                }
            };
            match outcome {
                Ok(_) => {
                    acked.push(row.id);
                    ::metrics::counter!(metrics::OUTBOX_PUBLISHED, "topic" => row.topic.clone())
                        .increment(1);
                    let delay = OffsetDateTime::now_utc() - row.created_at;
                    ::metrics::histogram!(metrics::OUTBOX_DELAY)
                        .record(delay.as_seconds_f64().max(0.0));
                }
                Err(error) => {
                    tracing::debug!(outbox.id = row.id, event.id = %row.event_id, %error, "not acknowledged");
                    *failed_by_topic.entry(row.topic.as_str()).or_default() += 1;
                }
            }
        }
        let acknowledged = started.elapsed();
        if !failed_by_topic.is_empty() {
            // Purge whatever is still queued, so none of it can land after a retry of earlier rows,
            // and get a fresh producer id for the next attempt (the old one may not survive a
            // broker restart; a fatal producer error needs a new producer anyway).
            self.producer.renew();
        }
        for (topic, count) in &failed_by_topic {
            ::metrics::counter!(metrics::OUTBOX_FAILED, "topic" => (*topic).to_owned())
                .increment(*count);
        }
        if delete && !acked.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
                .bind(&acked)
                .execute(&mut *conn)
                .await?;
        }
        tracing::debug!(
            rows = rows.len(),
            select_ms = selected.as_secs_f64() * 1e3,
            publish_ms = (acknowledged - selected).as_secs_f64() * 1e3,
            delete_ms = (started.elapsed() - acknowledged).as_secs_f64() * 1e3,
            "relay round"
        );
        Ok(Round {
            fetched: rows.len(),
            published: acked.len(),
            failed: rows.len() - acked.len() - held,
            held,
        })
    }

    async fn enqueue(
        producer: &FutureProducer<BrokerWatch>,
        row: &Row,
        topic_name: &str,
        headers: bool,
    ) -> Result<rdkafka::producer::DeliveryFuture, Refusal> {
        let mut record = FutureRecord::to(topic_name)
            .key(row.key.as_str())
            .payload(row.payload.as_slice());
        if headers {
            let event_id = row.event_id.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: "event-id",
                    value: Some(event_id.as_str()),
                })
                .insert(Header {
                    key: "event-type",
                    value: Some(row.event_type.as_str()),
                });
            if !row.traceparent.is_empty() {
                headers = headers.insert(Header {
                    key: "traceparent",
                    value: Some(row.traceparent.as_str()),
                });
            }
            record = record.headers(headers);
        }
        loop {
            match producer.send_result(record) {
                Ok(future) => return Ok(future),
                // The local queue is full: let it drain rather than fail the row.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((KafkaError::MessageProduction(code), _)) if refuses_for_good(code) => {
                    return Err(Refusal::Permanent(code.to_string()));
                }
                Err((error, _)) => {
                    tracing::warn!(outbox.id = row.id, %error, "the producer refused an event");
                    return Err(Refusal::Transient);
                }
            }
        }
    }

    /// Publishes the pending rows once **without deleting them**, as a relay that crashes between
    /// the broker's acknowledgement and its delete would. For fault tests.
    #[doc(hidden)]
    pub async fn publish_once_then_crash(mut self) -> anyhow::Result<Round> {
        let mut conn = self.pool.acquire().await?;
        let round = self.round(&mut conn, false).await?;
        self.producer.current().flush(Duration::from_secs(10))?;
        Ok(round)
    }
}

/// What became of a row handed to the producer.
enum Pending {
    /// Handed to the producer; the span of its publication ends with the acknowledgement.
    Sent(rdkafka::producer::DeliveryFuture, tracing::Span),
    /// Refused for now (the producer is in a bad state): counted as failed, retried next round.
    NotSent,
    /// Refused for good, or behind such a row of its key.
    Held,
}

/// Why the producer did not take a row.
enum Refusal {
    Transient,
    Permanent(String),
}

/// Whether the producer refusing a record for `code` is about the record itself, so that
/// retrying it can never help. (A topic the broker does not know yet is not: the relay knows
/// its topics, and one may be created while the broker is back from an outage.)
fn refuses_for_good(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
    )
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let result = async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    }
    .await;
    match result {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::warn!(%error, "cannot LISTEN for outbox notifications; polling");
            None
        }
    }
}

/// Returns on a notification, after `poll`, or on shutdown.
async fn wait_for_work(
    listener: &mut Option<PgListener>,
    pool: &PgPool,
    poll: Duration,
    shutdown: &CancellationToken,
) {
    if listener.is_none() {
        *listener = listen(pool).await;
    }
    let Some(active) = listener.as_mut() else {
        sleep_or_cancel(poll, shutdown).await;
        return;
    };
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(poll) => {}
        received = active.recv() => {
            match received {
                // Several commits may have notified: one round serves them all.
                Ok(_) => while active.next_buffered().is_some() {},
                Err(error) => {
                    tracing::warn!(%error, "outbox listener failed; reconnecting");
                    *listener = None;
                }
            }
        }
    }
}

/// Samples the backlog gauges every few seconds.
async fn sample_backlog(pool: PgPool, shutdown: CancellationToken) {
    loop {
        let sample: Result<(i64, Option<f64>), _> = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8 FROM outbox",
        )
        .fetch_one(&pool)
        .await;
        if let Ok((rows, oldest)) = sample {
            ::metrics::gauge!(metrics::OUTBOX_BACKLOG).set(rows as f64);
            ::metrics::gauge!(metrics::OUTBOX_OLDEST_AGE).set(oldest.unwrap_or(0.0).max(0.0));
        }
        if !sleep_or_cancel(Duration::from_secs(5), &shutdown).await {
            return;
        }
    }
}
