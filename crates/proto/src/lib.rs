//! Protobuf definitions shared by every RealChat service: the gRPC APIs and the Kafka events.
//!
//! The code is generated at build time from `proto/` (see `build.rs`); this crate only gives it
//! stable module paths.

#![forbid(unsafe_code)]
// Generated code is not ours to lint.
#![allow(unreachable_pub, clippy::all, missing_debug_implementations)]

/// `realchat.auth.v1`: the auth service.
pub mod auth {
    /// Version 1 of the auth API.
    pub mod v1 {
        tonic::include_proto!("realchat.auth.v1");
    }
}

/// `realchat.messaging.v1`: the messaging service.
pub mod messaging {
    /// Version 1 of the messaging API.
    pub mod v1 {
        tonic::include_proto!("realchat.messaging.v1");
    }
}

/// `realchat.delivery.v1`: what delivery replicas forward to each other.
pub mod delivery {
    /// Version 1 of the forwarding messages.
    pub mod v1 {
        tonic::include_proto!("realchat.delivery.v1");
    }
}

/// `realchat.profile.v1`: the profile service.
pub mod profile {
    /// Version 1 of the profile API.
    pub mod v1 {
        tonic::include_proto!("realchat.profile.v1");
    }
}

/// `realchat.events.v1`: the event envelope and every event payload.
pub mod events {
    /// Version 1 of the events.
    pub mod v1 {
        tonic::include_proto!("realchat.events.v1");
    }
}

impl events::v1::envelope::Payload {
    /// The dotted event type of this payload, as written in `Envelope.event_type` and, where the
    /// relay writes record headers, the `event-type` Kafka header.
    pub fn event_type(&self) -> &'static str {
        use events::v1::envelope::Payload;
        match self {
            Payload::UserRegistered(_) => "user.registered",
            Payload::MessageCreated(_) => "message.created",
            Payload::MemberAdded(_) => "member.added",
            Payload::MemberRemoved(_) => "member.removed",
            Payload::ReadUpdated(_) => "read.updated",
        }
    }
}
