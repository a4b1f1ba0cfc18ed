//! Kafka client configuration shared by producers, consumers and topic setup.

use std::path::PathBuf;
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use std::time::Duration;

use realchat_runtime::config::{Secret, secret_or_file};

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

    /// How the connections to the brokers are secured.
    #[command(flatten)]
    pub security: KafkaSecurity,
}

/// How clients reach the brokers: in the clear (the local broker), over TLS, or over TLS with a
/// SASL login (a managed cluster such as MSK with SASL/SCRAM). The same for every producer,
/// consumer and admin client.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl` (TLS) or `sasl_ssl` (TLS and a SASL login).
    #[arg(
        long = "kafka-security-protocol",
        env = "REALCHAT_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value_t = SecurityProtocol::Plaintext
    )]
    pub protocol: SecurityProtocol,

    /// SASL mechanism, with `sasl_ssl`.
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "REALCHAT_KAFKA_SASL_MECHANISM",
        value_enum,
        default_value_t = SaslMechanism::ScramSha512
    )]
    pub sasl_mechanism: SaslMechanism,

    /// SASL user name, with `sasl_ssl`.
    #[arg(long = "kafka-sasl-username", env = "REALCHAT_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,

    /// SASL password, with `sasl_ssl`.
    #[arg(
        long = "kafka-sasl-password",
        env = "REALCHAT_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<Secret<String>>,

    /// File holding the SASL password (wins over REALCHAT_KAFKA_SASL_PASSWORD).
    #[arg(
        long = "kafka-sasl-password-file",
        env = "REALCHAT_KAFKA_SASL_PASSWORD_FILE"
    )]
    pub sasl_password_file: Option<PathBuf>,

    /// PEM file of the CA certificates the brokers' certificates must chain to; unset, the
    /// system's trust store.
    #[arg(long = "kafka-ssl-ca-file", env = "REALCHAT_KAFKA_SSL_CA_FILE")]
    pub ssl_ca_file: Option<PathBuf>,
}

/// librdkafka's `security.protocol`, the ones RealChat supports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no login.
    #[default]
    Plaintext,
    /// TLS, the brokers' certificates checked against the CA file or the system's store.
    Ssl,
    /// TLS and a SASL login.
    SaslSsl,
}

/// The SASL mechanisms RealChat supports (librdkafka's `sasl.mechanisms`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    /// SCRAM with SHA-512 (MSK's).
    #[default]
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
    /// SCRAM with SHA-256.
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// A plain user name and password, only ever over TLS here.
    #[value(name = "PLAIN")]
    Plain,
}

impl SaslMechanism {
    fn name(self) -> &'static str {
        match self {
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::Plain => "PLAIN",
        }
    }
}

impl KafkaSecurity {
    /// Checks the combination and reads the password file: call at startup, so a missing
    /// password or an unreadable file stops the process with a clear error instead of a client
    /// that never connects.
    pub fn resolve(&self) -> anyhow::Result<Self> {
        let password = secret_or_file(
            "REALCHAT_KAFKA_SASL_PASSWORD",
            self.sasl_password.as_ref(),
            self.sasl_password_file.as_deref(),
        )?;
        if self.protocol == SecurityProtocol::SaslSsl {
            if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                anyhow::bail!(
                    "REALCHAT_KAFKA_SECURITY_PROTOCOL=sasl_ssl needs REALCHAT_KAFKA_SASL_USERNAME"
                );
            }
            if password.is_none() {
                anyhow::bail!(
                    "REALCHAT_KAFKA_SECURITY_PROTOCOL=sasl_ssl needs REALCHAT_KAFKA_SASL_PASSWORD or REALCHAT_KAFKA_SASL_PASSWORD_FILE"
                );
            }
        }
        if let Some(ca) = &self.ssl_ca_file {
            if self.protocol == SecurityProtocol::Plaintext {
                anyhow::bail!(
                    "REALCHAT_KAFKA_SSL_CA_FILE is set but REALCHAT_KAFKA_SECURITY_PROTOCOL is plaintext"
                );
            }
            std::fs::metadata(ca).map_err(|error| {
                anyhow::anyhow!(
                    "REALCHAT_KAFKA_SSL_CA_FILE: cannot read {}: {error}",
                    ca.display()
                )
            })?;
        }
        Ok(Self {
            sasl_password: password,
            sasl_password_file: None,
            ..self.clone()
        })
    }

    /// Sets the security properties on `config`.
    fn apply(&self, config: &mut ClientConfig) {
        match self.protocol {
            SecurityProtocol::Plaintext => {
                config.set("security.protocol", "plaintext");
            }
            SecurityProtocol::Ssl => {
                config.set("security.protocol", "ssl");
            }
            SecurityProtocol::SaslSsl => {
                config
                    .set("security.protocol", "sasl_ssl")
                    .set("sasl.mechanisms", self.sasl_mechanism.name())
                    .set(
                        "sasl.username",
                        self.sasl_username.as_deref().unwrap_or_default(),
                    )
                    .set(
                        "sasl.password",
                        self.sasl_password
                            .as_ref()
                            .map_or("", |password| password.expose().as_str()),
                    );
            }
        }
        if self.protocol != SecurityProtocol::Plaintext {
            // Brokers are checked against their host names, as a browser would.
            config.set("ssl.endpoint.identification.algorithm", "https");
            if let Some(ca) = &self.ssl_ca_file {
                config.set("ssl.ca.location", ca.display().to_string());
            }
        }
    }
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
            security: KafkaSecurity::default(),
        }
    }

    /// These options with the security settings checked and the password file read (see
    /// [`KafkaSecurity::resolve`]).
    pub fn resolve(&self) -> anyhow::Result<Self> {
        Ok(Self {
            security: self.security.resolve()?,
            ..self.clone()
        })
    }

    /// What every client shares: where the brokers are, how to reach them securely, and the
    /// debug contexts.
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        self.security.apply(&mut config);
        if !self.debug.is_empty() {
            config.set("debug", &self.debug);
        }
        config
    }

    /// The topic names in force.
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(self.topic_prefix.clone())
    }

    /// A producer that keeps per-partition order through retries and waits for every in-sync
    /// replica: idempotence on, `acks=all`.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
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
        config
    }

    /// A consumer-group member that stores offsets only when told to (after the handler
    /// succeeded) and commits the stored ones in the background.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
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
        config
    }

    /// What a service does with these options before it serves: check the security settings
    /// and read the password file ([`Self::resolve`]), then, when asked to, create missing topics
    /// (best effort: a broker that is down is said in a warning, and the service starts anyway).
    pub async fn prepare(&self) -> anyhow::Result<Self> {
        let resolved = self.resolve()?;
        if resolved.create_topics
            && let Err(error) = resolved.ensure_topics().await
        {
            tracing::warn!(
                error = format!("{error:#}"),
                "could not create the Kafka topics; continuing"
            );
        }
        Ok(resolved)
    }

    /// Creates every topic and its DLQ if missing, with local partition counts. Gives up after a
    /// few seconds: a service must start (and take sends) while the broker is down.
    pub async fn ensure_topics(&self) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(5), self.create_missing_topics())
            .await
            .map_err(|_| anyhow::anyhow!("the broker did not answer within 5 s"))?
    }

    async fn create_missing_topics(&self) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
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
///
/// It also reports the producer's statistics as metrics ([`crate::stats`]).
#[derive(Debug, Clone)]
pub struct BrokerWatch {
    lost: Arc<AtomicBool>,
    reporting: Arc<crate::stats::Reporting>,
}

impl Default for BrokerWatch {
    fn default() -> Self {
        Self {
            lost: Arc::default(),
            reporting: Arc::new(crate::stats::Reporting::producer()),
        }
    }
}

impl ClientContext for BrokerWatch {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        self.reporting.record(&statistics);
    }

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
            producer: kafka
                .producer_config()
                .set("statistics.interval.ms", crate::stats::INTERVAL_MS)
                .create_with_context(watch.clone())?,
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
            .set("statistics.interval.ms", crate::stats::INTERVAL_MS)
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
