//! A typed async client of RealChat's public API (API.md).
//!
//! - [`Client`]: the HTTP API, over `http://` or `https://` (the system's roots, plus any given to
//!   [`Client::with_root_certificates`]). It keeps the tokens of the last login and, when an access token
//!   expires, refreshes it once and repeats the request; concurrent requests share one refresh
//!   (a refresh token works once), and a [`TokenStore`] keeps each new pair at once and hands
//!   over one another process renewed. [`Client::send`] generates the `client_msg_id` and retries transport failures,
//!   `429` and `5xx` with the same id (waiting at least what `Retry-After` asks), which the
//!   server turns into the original message: a retry never makes a second copy.
//! - [`Socket`]: the WebSocket. It reconnects with backoff, resumes every conversation from the
//!   last seq it handed out, drops duplicates by `(conversation_id, seq)`, and reports a gap if
//!   the server ever skipped a seq.

#![forbid(unsafe_code)]

mod client;
mod error;
mod models;
mod paths;
mod socket;
mod tls;
mod token_store;

pub use client::Client;
pub use error::{Cause, Error};
pub use models::{
    Conversation, ConversationSummary, Message, Presence, Profile, ProfileEdit, Tokens, User,
};
pub use socket::{Event, Socket};
pub use token_store::TokenStore;
