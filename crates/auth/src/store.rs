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

/// Starts a new refresh family for a login, holding its first token; returns the family's id
/// (the session, `sid` in its access tokens).
pub async fn start_family(
    pool: &PgPool,
    user_id: Uuid,
    token: &str,
    expires_at: OffsetDateTime,
) -> Result<Uuid, Error> {
    let family_id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO refresh_families (id, user_id) VALUES ($1, $2)")
        .bind(family_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    insert_token(&mut tx, family_id, token, expires_at).await?;
    tx.commit().await?;
    Ok(family_id)
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

/// A revoked refresh family.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevokedFamily {
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub revoked_at: OffsetDateTime,
}

/// Families revoked at or after `since` and within the last `live_for` (older ones' access
/// tokens have expired), oldest first.
pub async fn revoked_sessions(
    pool: &PgPool,
    since: OffsetDateTime,
    live_for: std::time::Duration,
) -> Result<Vec<RevokedFamily>, Error> {
    Ok(sqlx::query_as(
        "SELECT id AS family_id, user_id, revoked_at FROM refresh_families
         WHERE revoked_at >= GREATEST($1, now() - make_interval(secs => $2))
         ORDER BY revoked_at
         LIMIT 10000",
    )
    .bind(since)
    .bind(live_for.as_secs_f64())
    .fetch_all(pool)
    .await?)
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

/// Failed logins in a row that are checked at once; from the next one, each waits.
pub const FREE_LOGIN_FAILURES: i32 = 5;
/// Longest wait between two checked guesses at one account.
pub const MAX_LOGIN_DELAY: std::time::Duration = std::time::Duration::from_secs(60);
/// Failures older than this are forgotten.
pub const FORGET_LOGIN_FAILURES: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// How long after `failures` failures in a row the next attempt waits: nothing for the first
/// few (typos), then 1 s, doubling, up to [`MAX_LOGIN_DELAY`]. A growing delay, never a
/// lockout: someone guessing cannot keep the owner out for more than a minute at a time.
pub fn login_delay(failures: i32) -> std::time::Duration {
    if failures < FREE_LOGIN_FAILURES {
        return std::time::Duration::ZERO;
    }
    let doublings = u32::try_from(failures - FREE_LOGIN_FAILURES)
        .unwrap_or(0)
        .min(16);
    std::time::Duration::from_secs(1u64 << doublings).min(MAX_LOGIN_DELAY)
}

/// Takes the right to check a password for `user`: `None` when it may be checked now, else how
/// long until it may. While the account is throttled, taking the attempt holds the next one
/// off for the current delay, so guesses sent together are checked one per delay.
pub async fn claim_login_attempt(
    pool: &PgPool,
    user: Uuid,
) -> Result<Option<std::time::Duration>, Error> {
    let mut tx = pool.begin().await?;
    let row: Option<(i32, OffsetDateTime, OffsetDateTime, OffsetDateTime)> = sqlx::query_as(
        "SELECT failures, last_failed_at, next_allowed_at, now() FROM login_failures
         WHERE user_id = $1 FOR UPDATE",
    )
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((failures, last_failed_at, next_allowed_at, now)) = row else {
        return Ok(None);
    };
    if failures < FREE_LOGIN_FAILURES || now - last_failed_at >= FORGET_LOGIN_FAILURES {
        return Ok(None);
    }
    if next_allowed_at > now {
        let wait = next_allowed_at - now;
        return Ok(Some(wait.try_into().unwrap_or(MAX_LOGIN_DELAY)));
    }
    sqlx::query("UPDATE login_failures SET next_allowed_at = $2 WHERE user_id = $1")
        .bind(user)
        .bind(now + login_delay(failures))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(None)
}

/// Counts a wrong password for `user`, and sets when the next attempt may be checked.
pub async fn record_login_failure(pool: &PgPool, user: Uuid) -> Result<(), Error> {
    let forget = FORGET_LOGIN_FAILURES.as_secs_f64();
    let failures: i32 = sqlx::query_scalar(
        "INSERT INTO login_failures (user_id, failures, last_failed_at, next_allowed_at)
         VALUES ($1, 1, now(), now())
         ON CONFLICT (user_id) DO UPDATE SET
             failures = CASE
                 WHEN login_failures.last_failed_at <= now() - make_interval(secs => $2) THEN 1
                 ELSE login_failures.failures + 1
             END,
             last_failed_at = now()
         RETURNING failures",
    )
    .bind(user)
    .bind(forget)
    .fetch_one(pool)
    .await?;
    let delay = login_delay(failures);
    if !delay.is_zero() {
        sqlx::query(
            "UPDATE login_failures SET next_allowed_at = now() + make_interval(secs => $2)
             WHERE user_id = $1",
        )
        .bind(user)
        .bind(delay.as_secs_f64())
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Forgets `user`'s failed logins (they just logged in).
pub async fn clear_login_failures(pool: &PgPool, user: Uuid) -> Result<(), Error> {
    sqlx::query("DELETE FROM login_failures WHERE user_id = $1")
        .bind(user)
        .execute(pool)
        .await?;
    Ok(())
}
