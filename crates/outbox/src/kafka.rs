//! Kafka client configuration shared by producers, consumers and topic setup.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use std::time::Duration;

use rdkafka::{
    ClientConfig, ClientContext,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    producer::{FutureProducer, ProducerContext},
};

use crate::{Topic, Topics};

/// How long a consumer-group member may go silent before the broker drops it and gives its
/// partitions to the others.
pub const CONSUMER_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the brokers are and how topics are named.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaOptions {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(
        long = "kafka-brokers",
        env = "REALCHAT_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    /// Prefix of every topic name (for sharing one cluster between deployments).
    #[arg(
        long = "kafka-topic-prefix",
        env = "REALCHAT_KAFKA_TOPIC_PREFIX",
        default_value = ""
    )]
    pub topic_prefix: String,

    /// Create missing topics at startup (best effort; production clusters usually provision them).
    #[arg(long = "kafka-create-topics", env = "REALCHAT_KAFKA_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_topics: bool,

    /// Longest a consumer's fetch waits at the broker for new events, in milliseconds
    /// (`fetch.wait.max.ms`). A Kafka broker answers as soon as there is data, so this only bounds
    /// idle polling; a broker that holds every fetch for this long (Tansu 0.6 does) adds it to
    /// every event's latency, and polls more often the lower it is.
    #[arg(
        long = "kafka-fetch-wait-ms",
        env = "REALCHAT_KAFKA_FETCH_WAIT_MS",
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(0..=10_000)
    )]
    pub fetch_wait_ms: u32,

    /// Repeat each event's id, type and trace context as Kafka record headers, for tools that read
    /// headers (RealChat's consumers read them from the event's envelope). Tansu 0.6 stores every
    /// header as a row of its own, which makes a record with three headers cost it about twice as
    /// much as one without; the local topology turns them off.
    #[arg(long = "kafka-record-headers", env = "REALCHAT_KAFKA_RECORD_HEADERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub record_headers: bool,

    /// librdkafka debug contexts (its `debug` property, e.g. `cgrp,fetch`), for diagnosing
    /// consumer-group and broker trouble; empty for none.
    #[arg(long = "kafka-debug", env = "REALCHAT_KAFKA_DEBUG", default_value = "")]
    pub debug: String,
}

impl KafkaOptions {
    /// Options for `brokers` with a topic prefix.
    pub fn new(brokers: impl Into<String>, topic_prefix: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: topic_prefix.into(),
            create_topics: true,
            fetch_wait_ms: 20,
            record_headers: true,
            debug: String::new(),
        }
    }

    /// The topic names in force.
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(self.topic_prefix.clone())
    }

    /// A producer that keeps per-partition order through retries and waits for every in-sync
    /// replica: idempotence on, `acks=all`.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // The relay already hands over a whole round at once; lingering only delays it (at
            // 200 msg/s, 2 ms of linger made a round's acknowledgement take 11 to 19 ms instead
            // of 3 to 4.5 ms at the median).
            .set("linger.ms", "0")
            // No per-message timeout: the relay bounds each round itself and purges what is left
            // (see `relay`), which keeps per-key order where individual timeouts would not.
            .set("message.timeout.ms", "0")
            .set("reconnect.backoff.max.ms", "1000")
            .set("socket.keepalive.enable", "true");
        self.with_debug(config)
    }

    fn with_debug(&self, mut config: ClientConfig) -> ClientConfig {
        if !self.debug.is_empty() {
            config.set("debug", &self.debug);
        }
        config
    }

    /// A consumer-group member that stores offsets only when told to (after the handler
    /// succeeded) and commits the stored ones in the background.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                CONSUMER_SESSION_TIMEOUT.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000")
            .set("reconnect.backoff.max.ms", "1000")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", self.fetch_wait_ms.to_string());
        self.with_debug(config)
    }

    /// Creates every topic and its DLQ if missing, with local partition counts. Gives up after a
    /// few seconds: a service must start (and take sends) while the broker is down.
    pub async fn ensure_topics(&self) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(5), self.create_missing_topics())
            .await
            .map_err(|_| anyhow::anyhow!("the broker did not answer within 5 s"))?
    }

    async fn create_missing_topics(&self) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()?;
        let topics = self.topics();
        let names: Vec<(String, i32)> = Topic::ALL
            .into_iter()
            .flat_map(|t| {
                [
                    (topics.name(t), t.default_partitions()),
                    (topics.dlq(t), t.default_partitions()),
                ]
            })
            .collect();
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(4)))
            .request_timeout(Some(Duration::from_secs(4)));
        let results = admin.create_topics(&new, &options).await;
        // Destroying a client joins its threads and may wait on the broker.
        close_on_own_thread(move || drop(admin));
        for result in results? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
            }
        }
        Ok(())
    }
}

/// Runs `close` (which closes Kafka clients) on a thread of its own.
///
/// Closing a client waits on the broker: leaving a group, committing, purging a queue. Against a
/// broker that is gone it can wait indefinitely, and on the runtime's blocking pool that would
/// hold up the process's exit, which waits for every blocking task. A thread of its own keeps the
/// runtime's workers free and lets the process exit whenever it is done.
pub(crate) fn close_on_own_thread(close: impl FnOnce() + Send + 'static) {
    on_own_thread("kafka-close", close);
}

/// Runs `work`, which makes blocking Kafka calls, on a thread of its own, for the same reason as
/// [`close_on_own_thread`].
pub(crate) fn on_own_thread(name: &str, work: impl FnOnce() + Send + 'static) {
    if let Err(error) = std::thread::Builder::new().name(name.into()).spawn(work) {
        tracing::warn!(%error, thread = name, "cannot start a thread for a Kafka client");
    }
}

/// Notices when a client has lost every broker.
///
/// Producers that outlive a broker restart present their old producer id to the restarted
/// broker; the local broker (Tansu 0.6) cannot take that and stops serving. So a producer that
/// lost every broker is replaced before it is used again (see [`WatchedProducer`]).
#[derive(Debug, Clone, Default)]
pub struct BrokerWatch {
    lost: Arc<AtomicBool>,
}

impl ClientContext for BrokerWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.lost.store(true, Ordering::Relaxed);
            tracing::warn!(reason, "lost every Kafka broker");
        } else {
            tracing::error!(%error, reason, "librdkafka error");
        }
    }
}

impl ProducerContext for BrokerWatch {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// An idempotent producer that is replaced, with a fresh producer id, after it lost every broker
/// or failed to deliver.
pub struct WatchedProducer {
    kafka: KafkaOptions,
    watch: BrokerWatch,
    producer: FutureProducer<BrokerWatch>,
}

impl std::fmt::Debug for WatchedProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedProducer").finish_non_exhaustive()
    }
}

impl WatchedProducer {
    /// A producer with [`KafkaOptions::producer_config`].
    pub fn new(kafka: &KafkaOptions) -> anyhow::Result<Self> {
        let watch = BrokerWatch::default();
        Ok(Self {
            producer: kafka.producer_config().create_with_context(watch.clone())?,
            kafka: kafka.clone(),
            watch,
        })
    }

    /// The producer to use now: a new one if the current one lost its brokers since last asked.
    pub fn current(&mut self) -> &FutureProducer<BrokerWatch> {
        if self.watch.lost.swap(false, Ordering::Relaxed) {
            self.renew();
        }
        &self.producer
    }

    /// Replaces the producer (its queued messages fail; the caller still holds their rows).
    pub fn renew(&mut self) {
        let watch = BrokerWatch::default();
        match self
            .kafka
            .producer_config()
            .create_with_context(watch.clone())
        {
            Ok(producer) => {
                let old = std::mem::replace(&mut self.producer, producer);
                self.watch = watch;
                // Dropping purges the old queue and waits a moment for the purge: not on an async
                // worker thread.
                close_on_own_thread(move || drop(old));
                tracing::info!("replaced the Kafka producer");
            }
            Err(error) => {
                tracing::warn!(%error, "could not create a new Kafka producer; keeping the old one")
            }
        }
    }
}
