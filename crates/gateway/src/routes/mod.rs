//! The HTTP routes of API.md, grouped by section.

pub(crate) mod auth;
pub(crate) mod conversations;
pub(crate) mod meta;
pub(crate) mod realtime;
pub(crate) mod users;
pub(crate) mod views;
