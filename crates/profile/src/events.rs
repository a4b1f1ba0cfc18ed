//! Events the profile service consumes: `user.registered` creates a profile.

use std::{future::Future, pin::Pin};

use realchat_events::consumer::{Event, Handler, HandlerError};
use realchat_proto::events::v1::envelope::Payload;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{error::Error, metrics, store};

/// Creates profiles from registrations, idempotently.
#[derive(Debug, Clone)]
pub(crate) struct Registrations {
    pub(crate) pool: PgPool,
}

impl Handler for Registrations {
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
            if let Err(why) = realchat_runtime::rules::username::check(&user.username) {
                return Err(HandlerError::Reject(anyhow::anyhow!(
                    "user.registered with a bad username {:?}: {why}",
                    user.username
                )));
            }
            let at = OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(user.registered_at_ms) * 1_000_000,
            )
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
            match store::create_from_registration(&self.pool, id, &user.username, at).await {
                Ok(created) => {
                    if created {
                        ::metrics::counter!(metrics::PROFILES_CREATED).increment(1);
                    }
                    Ok(())
                }
                Err(error @ Error::Unavailable(_)) => Err(HandlerError::Unavailable(error.into())),
                Err(error @ Error::Internal(_)) => Err(HandlerError::Retry(error.into())),
                Err(other) => Err(HandlerError::Reject(other.into())),
            }
        })
    }
}
