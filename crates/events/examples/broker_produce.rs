//! How many records per second the broker takes from one idempotent producer configured as the
//! relay's, with all of them in flight: the ceiling of the relay on that broker.
//!
//! ```sh
//! cargo run --release -p realchat-events --example broker_produce -- 127.0.0.1:9092 20000 3
//! ```
//! Arguments: brokers, records, headers per record (0 to 3), and optionally an offered rate in
//! records per second: then the records are handed over one at a time at that rate, as the relay
//! hands over rows as they commit, and the acknowledgement latency is printed too.

use std::time::{Duration, Instant};

use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use realchat_events::KafkaOptions;

/// Distinct keys, spread over the topic's partitions.
const KEYS: usize = 500;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let brokers = args.get(1).map_or("127.0.0.1:9092", String::as_str);
    let records: usize = args.get(2).map_or(Ok(20_000), |n| n.parse())?;
    let headers: usize = args.get(3).map_or(Ok(3), |n| n.parse())?;
    let rate: Option<f64> = args.get(4).map(|n| n.parse()).transpose()?;
    let prefix = format!("produce-rate-{}.", std::process::id());
    let kafka = KafkaOptions::new(brokers, prefix);
    kafka.ensure_topics().await?;
    let topic = kafka.topics().name(realchat_events::Topic::Messages);
    let producer: FutureProducer = kafka.producer_config().create()?;
    let payload = vec![7u8; 300];
    // Connecting, the producer id and the topic's metadata come with the first records: not part
    // of what is measured.
    let warm_up: Vec<_> = (0..KEYS)
        .map(|i| {
            let key = format!("conversation-{i}");
            producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
                .map_err(|(e, _)| e)
        })
        .collect::<Result<_, _>>()?;
    for delivery in warm_up {
        delivery.await?.map_err(|(e, _)| e)?;
    }
    let started = Instant::now();
    let mut pending = Vec::with_capacity(records);
    let mut latencies = Vec::with_capacity(records);
    for i in 0..records {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let key = format!("conversation-{}", i % KEYS);
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
        let delivery = producer.send_result(record).map_err(|(e, _)| e)?;
        let handed = Instant::now();
        pending.push(tokio::spawn(async move {
            delivery.await?.map_err(|(e, _)| e)?;
            Ok::<_, anyhow::Error>(handed.elapsed())
        }));
    }
    for delivery in pending {
        latencies.push(delivery.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{records} records with {headers} headers in {secs:.2} s: {:.0}/s",
        records as f64 / secs
    );
    if latencies.is_empty() {
        return Ok(());
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "acknowledged after p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}
