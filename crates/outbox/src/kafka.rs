//! Kafka client configuration shared by producers, consumers and topic setup.

use std::time::Duration;

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::RDKafkaErrorCode,
};

use crate::{Topic, Topics};

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
}

impl KafkaOptions {
    /// Options for `brokers` with a topic prefix.
    pub fn new(brokers: impl Into<String>, topic_prefix: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: topic_prefix.into(),
            create_topics: true,
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
            .set("linger.ms", "2")
            // A message the broker has not acknowledged by then fails back to the relay, which keeps
            // its row and tries again; short enough that the relay notices an outage quickly.
            .set("message.timeout.ms", "10000")
            .set("reconnect.backoff.max.ms", "1000")
            .set("socket.keepalive.enable", "true");
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
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("reconnect.backoff.max.ms", "1000")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "20");
        config
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
        for result in admin.create_topics(&new, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
            }
        }
        Ok(())
    }
}
