//! How many records per second the broker takes from one idempotent producer configured as the
//! relay's, with all of them in flight: the ceiling of the relay on that broker.
//!
//! ```sh
//! cargo run --release -p realchat-outbox --example broker_produce -- 127.0.0.1:9092 20000 3
//! ```
//! Arguments: brokers, records, headers per record (0 to 3).

use std::time::Instant;

use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use realchat_outbox::KafkaOptions;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let brokers = args.get(1).map_or("127.0.0.1:9092", String::as_str);
    let records: usize = args.get(2).map_or(Ok(20_000), |n| n.parse())?;
    let headers: usize = args.get(3).map_or(Ok(3), |n| n.parse())?;
    let prefix = format!("produce-rate-{}.", std::process::id());
    let kafka = KafkaOptions::new(brokers, prefix);
    kafka.ensure_topics().await?;
    let topic = kafka.topics().name(realchat_outbox::Topic::Messages);
    let producer: FutureProducer = kafka.producer_config().create()?;
    let payload = vec![7u8; 300];
    let started = Instant::now();
    let mut pending = Vec::with_capacity(records);
    for i in 0..records {
        let key = format!("conversation-{}", i % 500);
        let mut record_headers = OwnedHeaders::new();
        for (name, value) in [
            ("event-id", "0193f3a2-7b1c-7c3e-9a3b-5f0e1d2c3b4a"),
            ("event-type", "message.created"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ]
        .into_iter()
        .take(headers)
        {
            record_headers = record_headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&payload)
            .headers(record_headers);
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for delivery in pending {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{records} records with {headers} headers in {secs:.2} s: {:.0}/s",
        records as f64 / secs
    );
    Ok(())
}
