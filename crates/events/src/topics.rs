//! The topics RealChat uses, as one enum, and their names.

use std::fmt;

/// A Kafka topic, by its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `realchat.messages.v1`, keyed by conversation id: message.created, member.added,
    /// member.removed, read.updated.
    Messages,
    /// `realchat.users.v1`, keyed by user id: user.registered.
    Users,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 2] = [Topic::Messages, Topic::Users];

    /// The name stored in outbox rows; independent of deployment naming.
    pub fn logical_name(self) -> &'static str {
        match self {
            Topic::Messages => "messages",
            Topic::Users => "users",
        }
    }

    /// Parses a [`Topic::logical_name`].
    pub fn from_logical_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.logical_name() == name)
    }

    /// Partitions in a local deployment.
    pub fn default_partitions(self) -> i32 {
        match self {
            Topic::Messages => 12,
            Topic::Users => 6,
        }
    }

    fn base_name(self) -> &'static str {
        match self {
            Topic::Messages => "realchat.messages.v1",
            Topic::Users => "realchat.users.v1",
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.logical_name())
    }
}

/// Maps topics to their Kafka names: `<prefix>realchat.messages.v1` and its `.dlq`.
///
/// The prefix is empty in deployments; tests give each test its own, so they share one broker
/// without seeing each other's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// Names with `prefix` in front.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The Kafka name of `topic`.
    pub fn name(&self, topic: Topic) -> String {
        format!("{}{}", self.prefix, topic.base_name())
    }

    /// The dead-letter topic of `topic`.
    pub fn dlq(&self, topic: Topic) -> String {
        format!("{}.dlq", self.name(topic))
    }

    /// The topic a Kafka name belongs to (its main topic, not the DLQ).
    pub fn parse(&self, name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| self.name(*t) == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_round_trip() {
        let topics = Topics::with_prefix("t1.");
        assert_eq!(topics.name(Topic::Messages), "t1.realchat.messages.v1");
        assert_eq!(topics.dlq(Topic::Users), "t1.realchat.users.v1.dlq");
        assert_eq!(topics.parse("t1.realchat.users.v1"), Some(Topic::Users));
        assert_eq!(topics.parse("realchat.users.v1"), None);
        assert_eq!(Topic::from_logical_name("messages"), Some(Topic::Messages));
        assert_eq!(Topics::default().name(Topic::Users), "realchat.users.v1");
    }
}
