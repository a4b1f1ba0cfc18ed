//! Events messaging consumes: `user.registered`, to know who may be a member.

use std::{future::Future, pin::Pin};

use realchat_events::consumer::{Event, Handler, HandlerError};
use realchat_proto::events::v1::envelope::Payload;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{error::Error, store};

/// Keeps `known_users` in step with registrations.
#[derive(Debug, Clone)]
pub(crate) struct KnownUsers {
    pub(crate) pool: PgPool,
}

impl Handler for KnownUsers {
    fn handle<'a>(
        &'a self,
        event: &'a Event,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'a>> {
        Box::pin(async move {
            let Some(Payload::UserRegistered(user)) = &event.envelope.payload else {
                // Other events on the topic are not for us.
                return Ok(());
            };
            let id = Uuid::parse_str(&user.user_id).map_err(|_| {
                HandlerError::Reject(anyhow::anyhow!(
                    "user.registered with a bad user_id {:?}",
                    user.user_id
                ))
            })?;
            let at = OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(user.registered_at_ms) * 1_000_000,
            )
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
            store::remember_user(&self.pool, id, &user.username, at)
                .await
                .map_err(|error| match error {
                    Error::Unavailable(_) => HandlerError::Unavailable(error.into()),
                    Error::Internal(_) => HandlerError::Retry(error.into()),
                    other => HandlerError::Reject(other.into()),
                })
        })
    }
}
