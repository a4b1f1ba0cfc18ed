//! Delivery against the real services: auth, messaging and gateway in process, delivery replicas
//! in process (or as processes, to kill), on PostgreSQL, Redis and the broker.

#![allow(clippy::unwrap_used)]

mod faults;
mod frames;
mod order;
mod presence;
mod tls;

use std::time::Duration;

/// How long a test waits for something that should take milliseconds.
pub(crate) const SOON: Duration = Duration::from_secs(20);
