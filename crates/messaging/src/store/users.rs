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

/// The ids in `users` that share at least one conversation with `caller`. Each asked id costs a
/// look at its own memberships (`members_by_user`), each stopping at the first shared one.
pub async fn shared_with(pool: &PgPool, caller: Uuid, users: &[Uuid]) -> Result<Vec<Uuid>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT u FROM unnest($2::uuid[]) AS u WHERE EXISTS (
             SELECT 1 FROM members theirs
             JOIN members mine ON mine.conversation_id = theirs.conversation_id AND mine.user_id = $1
             WHERE theirs.user_id = u)",
    )
    .bind(caller)
    .bind(users)
    .fetch_all(pool)
    .await?)
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
