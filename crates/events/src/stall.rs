//! Noticing a consumer-group member that is stuck without partitions.
//!
//! After a broker restart a member can be left waiting for an assignment that never comes: it
//! rejoined, the broker lost or mangled the group's state while it was going down (Tansu 0.6 has
//! been seen panicking in its group coordinator then), and librdkafka keeps waiting, quietly, for
//! as long as the process lives. Every event of the group's partitions then waits with it.
//!
//! A member cannot tell that from a healthy idle one by looking at itself: a group with more
//! members than partitions leaves some with none, and a topic with nothing new gives a member
//! nothing to do. So the loop asks the broker, while the member has had no partitions for longer
//! than [`ConsumerOptions::stall_after`](crate::consumer::ConsumerOptions::stall_after), whether
//! events are waiting for the group and whether the group's committed offsets moved since the
//! last look. Events waiting and nothing moving means nobody consumes them: the member is
//! rebuilt (a new client joining as a new member), which is counted in
//! `consumer_rebuilds_total{reason="unassigned"}`.

use std::time::{Duration, Instant};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer as _},
};

use crate::KafkaOptions;

/// How often the loop looks at its assignment.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long one look at the group's offsets may take before it counts as no answer.
const LOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// A consumer group's progress over the topics it reads, as the broker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupProgress {
    /// Events after the group's committed offsets (or the start, where it has none).
    pub waiting: i64,
    /// The committed offsets added up: it grows while anyone in the group consumes.
    pub committed: i64,
}

/// How far `group` is through `topics`, as the broker sees it; `None` when the broker does not
/// answer in time.
pub async fn group_progress(
    kafka: &KafkaOptions,
    group: &str,
    topics: &[crate::Topic],
) -> Option<GroupProgress> {
    let names = kafka.topics();
    let names: Vec<String> = topics.iter().map(|t| names.name(*t)).collect();
    look(kafka, group, &names).await
}

/// What the loop remembers between looks.
#[derive(Debug)]
pub(crate) struct StallWatch {
    after: Duration,
    unassigned_since: Option<Instant>,
    last: Option<GroupProgress>,
}

impl StallWatch {
    /// A watch that suspects a member after `after` without partitions.
    pub(crate) fn new(after: Duration) -> Self {
        Self {
            after,
            unassigned_since: None,
            last: None,
        }
    }

    /// Forgets what it saw: the member was just (re)built.
    pub(crate) fn reset(&mut self) {
        self.unassigned_since = None;
        self.last = None;
    }

    /// Whether the member has been without partitions long enough that the group's progress
    /// should be looked at now.
    pub(crate) fn suspect(&mut self, assigned: usize, now: Instant) -> bool {
        if assigned > 0 {
            self.reset();
            return false;
        }
        let since = *self.unassigned_since.get_or_insert(now);
        now.duration_since(since) >= self.after
    }

    /// Given the group's progress now, whether the member is stuck: events wait and the
    /// committed offsets did not move since the previous look (two looks are needed, so a group
    /// that merely has a backlog while another member works through it is left alone).
    pub(crate) fn stuck(&mut self, now: GroupProgress) -> bool {
        let previous = self.last.replace(now);
        now.waiting > 0 && previous.is_some_and(|p| p.committed == now.committed)
    }
}

/// Asks the broker how far `group` is through `topics`, on a thread of its own (every call
/// blocks, and against a broker in trouble may take its whole timeout). `None` when the broker
/// does not answer in time: nothing can be concluded then.
pub(crate) async fn look(
    kafka: &KafkaOptions,
    group: &str,
    topics: &[String],
) -> Option<GroupProgress> {
    let config = kafka.consumer_config(group);
    let topics = topics.to_vec();
    let (answer, answered) = tokio::sync::oneshot::channel();
    crate::kafka::on_own_thread("kafka-group-look", move || {
        let progress = (|| -> Result<GroupProgress, rdkafka::error::KafkaError> {
            // Not subscribed: it reads the group's offsets without joining the group.
            let client: BaseConsumer = config.create()?;
            let metadata = client.fetch_metadata(None, LOOK_TIMEOUT)?;
            let mut partitions = TopicPartitionList::new();
            for topic in metadata.topics() {
                if topics.iter().any(|t| t == topic.name()) {
                    for partition in topic.partitions() {
                        partitions.add_partition(topic.name(), partition.id());
                    }
                }
            }
            let committed = client.committed_offsets(partitions, LOOK_TIMEOUT)?;
            let mut progress = GroupProgress {
                waiting: 0,
                committed: 0,
            };
            for entry in committed.elements() {
                let (low, high) =
                    client.fetch_watermarks(entry.topic(), entry.partition(), LOOK_TIMEOUT)?;
                let position = match entry.offset() {
                    Offset::Offset(offset) => offset,
                    _ => low,
                };
                progress.waiting += (high - position).max(0);
                progress.committed += position;
            }
            Ok(progress)
        })();
        let _ = answer.send(progress);
    });
    match tokio::time::timeout(LOOK_TIMEOUT * 4, answered).await {
        Ok(Ok(Ok(progress))) => Some(progress),
        Ok(Ok(Err(error))) => {
            tracing::debug!(%error, "cannot read the group's progress");
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(waiting: i64, committed: i64) -> GroupProgress {
        GroupProgress { waiting, committed }
    }

    #[test]
    fn a_member_with_partitions_is_never_suspected() {
        let mut watch = StallWatch::new(Duration::from_secs(10));
        let start = Instant::now();
        assert!(!watch.suspect(3, start));
        assert!(!watch.suspect(3, start + Duration::from_secs(60)));
    }

    #[test]
    fn a_member_without_partitions_is_suspected_after_the_bound_and_cleared_by_an_assignment() {
        let mut watch = StallWatch::new(Duration::from_secs(10));
        let start = Instant::now();
        assert!(!watch.suspect(0, start));
        assert!(!watch.suspect(0, start + Duration::from_secs(9)));
        assert!(watch.suspect(0, start + Duration::from_secs(10)));
        assert!(!watch.suspect(2, start + Duration::from_secs(11)));
        assert!(!watch.suspect(0, start + Duration::from_secs(12)));
    }

    #[test]
    fn stuck_needs_waiting_events_and_no_progress_over_two_looks() {
        let mut watch = StallWatch::new(Duration::ZERO);
        // The first look only remembers.
        assert!(!watch.stuck(progress(5, 100)));
        // Someone else in the group consumes: not stuck.
        assert!(!watch.stuck(progress(5, 120)));
        // Nothing moved and events wait: stuck.
        assert!(watch.stuck(progress(5, 120)));
    }

    #[test]
    fn nothing_waiting_is_never_stuck() {
        let mut watch = StallWatch::new(Duration::ZERO);
        assert!(!watch.stuck(progress(0, 100)));
        assert!(!watch.stuck(progress(0, 100)));
    }
}
