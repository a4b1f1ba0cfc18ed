//! Kafka helpers: topics of a test's own, and reading what landed on them.

use std::time::Duration;

use prost::Message as _;
use rdkafka::{
    ClientConfig, Message as _,
    consumer::{Consumer as _, StreamConsumer},
    message::{Headers as _, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
};
use realchat_events::{KafkaOptions, Topic};
use realchat_proto::events::v1::Envelope;

/// Kafka options with a fresh topic prefix on the shared test broker, the topics created.
pub async fn fresh_topics() -> KafkaOptions {
    fresh_topics_on(&crate::kafka_brokers()).await
}

/// Kafka options with a fresh topic prefix on `brokers`, the topics created.
pub async fn fresh_topics_on(brokers: &str) -> KafkaOptions {
    fresh_topics_with(KafkaOptions::new(brokers, "")).await
}

/// `options` (a broker behind TLS, say) with a fresh topic prefix, the topics created.
pub async fn fresh_topics_with(mut options: KafkaOptions) -> KafkaOptions {
    options.topic_prefix = crate::unique("t") + ".";
    options.ensure_topics().await.unwrap();
    options
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Record {
    /// The decoded envelope (panics if it is not one).
    pub fn envelope(&self) -> Envelope {
        Envelope::decode(self.payload.as_slice()).unwrap()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn to_record(message: &OwnedMessage) -> Record {
    Record {
        partition: message.partition(),
        offset: message.offset(),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        headers: message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        payload: message.payload().unwrap_or_default().to_vec(),
    }
}

/// Reads `topic_name` from the beginning with a fresh group until `at_least` records arrived
/// and then `quiet` passed without more, or until `timeout`. Records come in partition order.
pub async fn read_topic(
    kafka: &KafkaOptions,
    topic_name: &str,
    at_least: usize,
    quiet: Duration,
    timeout: Duration,
) -> Vec<Record> {
    let consumer: StreamConsumer = kafka
        .consumer_config(&crate::unique("reader-"))
        .create()
        .unwrap();
    consumer.subscribe(&[topic_name]).unwrap();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut records = Vec::new();
    loop {
        let wait = if records.len() >= at_least {
            quiet
        } else {
            Duration::from_secs(1)
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(message)) => records.push(to_record(&message.detach())),
            Ok(Err(error)) => panic!("reading {topic_name}: {error}"),
            Err(_) if records.len() >= at_least => break,
            Err(_) => {}
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
    }
    // Closing leaves the group and waits on the broker: not on a runtime worker.
    tokio::task::spawn_blocking(move || drop(consumer));
    records
}

/// Reads a topic of this test's prefix.
pub async fn read(
    kafka: &KafkaOptions,
    topic: Topic,
    at_least: usize,
    timeout: Duration,
) -> Vec<Record> {
    read_topic(
        kafka,
        &kafka.topics().name(topic),
        at_least,
        Duration::from_millis(500),
        timeout,
    )
    .await
}

/// Reads a DLQ of this test's prefix.
pub async fn read_dlq(
    kafka: &KafkaOptions,
    topic: Topic,
    at_least: usize,
    timeout: Duration,
) -> Vec<Record> {
    read_topic(
        kafka,
        &kafka.topics().dlq(topic),
        at_least,
        Duration::from_millis(500),
        timeout,
    )
    .await
}

/// Produces a raw record (for poison events), waiting for the acknowledgement.
pub async fn produce_raw(kafka: &KafkaOptions, topic: Topic, key: &str, payload: &[u8]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()
        .unwrap();
    let name = kafka.topics().name(topic);
    producer
        .send(
            FutureRecord::to(&name).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    tokio::task::spawn_blocking(move || drop(producer));
}
