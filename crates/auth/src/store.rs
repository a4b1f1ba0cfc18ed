//! The auth database: every query the service makes, and nothing else.

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{domain::Username, error::Error};

/// A stored user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
}

/// What a presented refresh token turned out to be.
#[derive(Debug)]
pub enum Presented {
    /// Valid: it was spent now, and belongs to this family and user.
    Fresh { family_id: Uuid, user_id: Uuid },
    /// It had been spent before: the family is now revoked.
    Reused,
    /// Unknown, expired, or its family was revoked.
    Invalid,
}

/// SHA-256 of an opaque refresh token: what the database keeps.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Inserts a user, in the caller's transaction; [`Error::UsernameTaken`] when the name exists.
pub async fn insert_user(
    conn: &mut PgConnection,
    id: Uuid,
    username: &Username,
    password_hash: &str,
    created_at: OffsetDateTime,
) -> Result<(), Error> {
    let result = sqlx::query(
        "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(username.as_str())
    .bind(password_hash)
    .bind(created_at)
    .execute(conn)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(Error::UsernameTaken),
        Err(other) => Err(other.into()),
    }
}

/// Whether a username is taken; lets registration refuse before paying for a hash.
pub async fn username_exists(pool: &PgPool, username: &Username) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE username = $1)")
            .bind(username.as_str())
            .fetch_one(pool)
            .await?,
    )
}

/// A user by (normalised) username.
pub async fn user_by_username(
    pool: &PgPool,
    username: &Username,
) -> Result<Option<UserRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, username, password_hash, created_at FROM users WHERE username = $1",
    )
    .bind(username.as_str())
    .fetch_optional(pool)
    .await?)
}

/// A user by id.
pub async fn user_by_id(pool: &PgPool, id: Uuid) -> Result<Option<UserRow>, Error> {
    Ok(
        sqlx::query_as("SELECT id, username, password_hash, created_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The users among `ids`; unknown ids are left out.
pub async fn users_by_ids(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<UserRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, username, password_hash, created_at FROM users WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

/// Starts a new refresh family for a login, holding its first token.
pub async fn start_family(
    pool: &PgPool,
    user_id: Uuid,
    token: &str,
    expires_at: OffsetDateTime,
) -> Result<(), Error> {
    let family_id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO refresh_families (id, user_id) VALUES ($1, $2)")
        .bind(family_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    insert_token(&mut tx, family_id, token, expires_at).await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_token(
    tx: &mut Transaction<'_, Postgres>,
    family_id: Uuid,
    token: &str,
    expires_at: OffsetDateTime,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(token_hash(token))
    .bind(family_id)
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Spends `presented` and, if it was fresh, stores `successor` in the same family, atomically.
///
/// The token and family rows are locked, so two concurrent exchanges of one token serialise: the
/// first wins, the second sees a spent token and revokes the family, exactly as a replay by a thief.
pub async fn rotate(
    pool: &PgPool,
    presented: &str,
    successor: &str,
    successor_expires_at: OffsetDateTime,
) -> Result<Presented, Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        family_id: Uuid,
        user_id: Uuid,
        expires_at: OffsetDateTime,
        used_at: Option<OffsetDateTime>,
        revoked_at: Option<OffsetDateTime>,
    }

    let mut tx = pool.begin().await?;
    let row: Option<Row> = sqlx::query_as(
        "SELECT t.family_id, f.user_id, t.expires_at, t.used_at, f.revoked_at
         FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
         WHERE t.token_hash = $1
         FOR UPDATE OF t, f",
    )
    .bind(token_hash(presented))
    .fetch_optional(&mut *tx)
    .await?;

    let Some(row) = row else {
        return Ok(Presented::Invalid);
    };
    if row.revoked_at.is_some() || row.expires_at <= OffsetDateTime::now_utc() {
        return Ok(Presented::Invalid);
    }
    if row.used_at.is_some() {
        revoke_family_in(&mut tx, row.family_id).await?;
        tx.commit().await?;
        return Ok(Presented::Reused);
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
        .bind(token_hash(presented))
        .execute(&mut *tx)
        .await?;
    insert_token(&mut tx, row.family_id, successor, successor_expires_at).await?;
    tx.commit().await?;
    Ok(Presented::Fresh {
        family_id: row.family_id,
        user_id: row.user_id,
    })
}

async fn revoke_family_in(
    tx: &mut Transaction<'_, Postgres>,
    family_id: Uuid,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Revokes the family of `token`, if the token exists. Returns whether it did.
pub async fn revoke_family_of(pool: &PgPool, token: &str) -> Result<bool, Error> {
    let result = sqlx::query(
        "UPDATE refresh_families SET revoked_at = now()
         WHERE id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1) AND revoked_at IS NULL",
    )
    .bind(token_hash(token))
    .execute(pool)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Whether the family of `token` has been revoked (for tests and diagnostics).
pub async fn family_revoked(pool: &PgPool, token: &str) -> Result<Option<bool>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT f.revoked_at IS NOT NULL FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
         WHERE t.token_hash = $1",
    )
    .bind(token_hash(token))
    .fetch_optional(pool)
    .await?)
}
