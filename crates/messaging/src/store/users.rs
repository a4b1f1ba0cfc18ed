//! Who messaging knows as registered users (`known_users`).

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Error;

/// Records a registered user. Idempotent: a redelivered event changes nothing.
pub async fn remember_user(
    pool: &PgPool,
    id: Uuid,
    username: &str,
    registered_at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO known_users (id, username, registered_at) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(username)
    .bind(registered_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The ids in `users` that messaging has never heard of.
pub async fn unknown_users(pool: &PgPool, users: &[Uuid]) -> Result<Vec<Uuid>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT u FROM unnest($1::uuid[]) AS u WHERE NOT EXISTS (SELECT 1 FROM known_users k WHERE k.id = u)",
    )
    .bind(users)
    .fetch_all(pool)
    .await?)
}
