//! librdkafka's statistics as metrics. Every consumer and producer this crate makes reports them
//! every [`INTERVAL_MS`] milliseconds on librdkafka's own thread; they become gauges and counters
//! here:
//!
//! - [`CONSUMER_LAG`]: messages a group's member has not handled yet, per topic and partition
//!   (the high watermark less the position it reached). A partition the member does not own
//!   reads 0: the member that owns it reports the real figure, so `max` across replicas is the
//!   group's lag.
//! - [`REBALANCES`]: how often a member's group rebalanced.
//! - [`BROKER_UP`], [`BROKER_RTT_P99`]: per client role and broker, whether the connection is up
//!   and the 99th percentile of its request round trips (a consumer's fetch, a producer's produce)
//!   over the last interval.
//! - [`PRODUCE_QUEUE_P99`]: how long produced records waited in librdkafka's queue before being
//!   sent.

use std::sync::atomic::{AtomicI64, Ordering};

use rdkafka::{ClientContext, consumer::ConsumerContext, statistics::Statistics};

/// How often clients report statistics (`statistics.interval.ms`).
pub const INTERVAL_MS: &str = "5000";

/// Messages a group's member has yet to handle, by `group`, `topic`, `partition`.
pub const CONSUMER_LAG: &str = "kafka_consumer_lag_messages";
/// Rebalances of a group, as its members saw them, by `group`.
pub const REBALANCES: &str = "kafka_consumer_rebalances_total";
/// 1 while a client's connection to a broker is up, by `role` and `broker`.
pub const BROKER_UP: &str = "kafka_broker_up";
/// 99th percentile of a client's request round trips to a broker, by `role` and `broker`.
pub const BROKER_RTT_P99: &str = "kafka_broker_rtt_p99_seconds";
/// 99th percentile of the time produced records waited in the client's queue, by `broker`.
pub const PRODUCE_QUEUE_P99: &str = "kafka_producer_queue_latency_p99_seconds";

/// Describes the metrics above.
pub fn describe() {
    metrics::describe_gauge!(
        CONSUMER_LAG,
        "Messages a consumer group's member has not handled yet, by topic and partition"
    );
    metrics::describe_counter!(REBALANCES, "Rebalances of a consumer group");
    metrics::describe_gauge!(
        BROKER_UP,
        "1 while a Kafka client's connection to a broker is up"
    );
    metrics::describe_gauge!(
        BROKER_RTT_P99,
        metrics::Unit::Seconds,
        "99th percentile of a Kafka client's request round trips to a broker, last interval"
    );
    metrics::describe_gauge!(
        PRODUCE_QUEUE_P99,
        metrics::Unit::Seconds,
        "99th percentile of the time produced records waited in the producer's queue"
    );
}

/// A client context that turns statistics into metrics for a client of `role` (`consumer` in
/// `group`, or `producer`).
#[derive(Debug)]
pub struct Reporting {
    role: &'static str,
    group: String,
    rebalances: AtomicI64,
}

impl Reporting {
    /// A consumer's, in `group`.
    pub fn consumer(group: &str) -> Self {
        Self {
            role: "consumer",
            group: group.to_owned(),
            rebalances: AtomicI64::new(0),
        }
    }

    /// A producer's.
    pub fn producer() -> Self {
        Self {
            role: "producer",
            group: String::new(),
            rebalances: AtomicI64::new(0),
        }
    }

    pub(crate) fn record(&self, statistics: &Statistics) {
        #[allow(clippy::cast_precision_loss)]
        let micros = |us: i64| us as f64 / 1e6;
        for broker in statistics.brokers.values() {
            // Bootstrap and coordinator entries stand for a real broker listed too.
            if broker.source == "logical" || broker.nodename.is_empty() {
                continue;
            }
            let up = if broker.state == "UP" { 1.0 } else { 0.0 };
            metrics::gauge!(BROKER_UP, "role" => self.role, "broker" => broker.nodename.clone())
                .set(up);
            if let Some(rtt) = broker.rtt.as_ref().filter(|w| w.cnt > 0) {
                metrics::gauge!(BROKER_RTT_P99, "role" => self.role, "broker" => broker.nodename.clone())
                    .set(micros(rtt.p99));
            }
            if self.role == "producer"
                && let Some(queued) = broker.int_latency.as_ref().filter(|w| w.cnt > 0)
            {
                metrics::gauge!(PRODUCE_QUEUE_P99, "broker" => broker.nodename.clone())
                    .set(micros(queued.p99));
            }
        }
        if self.role != "consumer" {
            return;
        }
        for topic in statistics.topics.values() {
            for partition in topic.partitions.values() {
                // -1 is librdkafka's bucket for records not yet assigned a partition.
                if partition.partition < 0 {
                    continue;
                }
                #[allow(clippy::cast_precision_loss)]
                let lag = partition.consumer_lag.max(0) as f64;
                metrics::gauge!(
                    CONSUMER_LAG,
                    "group" => self.group.clone(),
                    "topic" => topic.topic.clone(),
                    "partition" => partition.partition.to_string(),
                )
                .set(lag);
            }
        }
        if let Some(group) = &statistics.cgrp {
            let before = self.rebalances.swap(group.rebalance_cnt, Ordering::Relaxed);
            let new = group.rebalance_cnt.saturating_sub(before);
            if new > 0 {
                metrics::counter!(REBALANCES, "group" => self.group.clone())
                    .increment(new.unsigned_abs());
            }
        }
    }
}

impl ClientContext for Reporting {
    fn stats(&self, statistics: Statistics) {
        self.record(&statistics);
    }
}

impl ConsumerContext for Reporting {}
