//! The `profile` database.
//!
//! A profile is created by the registration event and edited by its owner, in either order: an
//! edit that comes first makes a row without a username (not shown until the event fills it), and
//! the event never overwrites what an edit set. Replaying the event is a no-op.

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Error;

/// A profile as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProfileRow {
    pub user_id: Uuid,
    pub username: Option<String>,
    pub display_name: Option<String>,
    pub bio: Option<String>,
    pub avatar_url: Option<String>,
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "user_id, username, display_name, bio, avatar_url, updated_at";

/// A change to a field: leave it, set it, or clear it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Change {
    #[default]
    Keep,
    Set(String),
    Clear,
}

/// What an edit changes.
#[derive(Debug, Clone, Default)]
pub struct Edit {
    pub display_name: Option<String>,
    pub bio: Change,
    pub avatar_url: Change,
}

/// Creates the profile of a registered user; true if it was new. Idempotent, and never touches
/// what an edit already set.
pub async fn create_from_registration(
    pool: &PgPool,
    user: Uuid,
    username: &str,
    registered_at: OffsetDateTime,
) -> Result<bool, Error> {
    let created: Option<bool> = sqlx::query_scalar(
        "INSERT INTO profiles (user_id, username, display_name, registered_at, updated_at)
         VALUES ($1, $2, $2, $3, $3)
         ON CONFLICT (user_id) DO UPDATE
             SET username = EXCLUDED.username,
                 display_name = COALESCE(profiles.display_name, EXCLUDED.display_name),
                 registered_at = EXCLUDED.registered_at
             WHERE profiles.username IS NULL
         RETURNING (xmax = 0)",
    )
    .bind(user)
    .bind(username)
    .bind(registered_at)
    .fetch_optional(pool)
    .await?;
    Ok(created.unwrap_or(false))
}

/// A visible profile (the registration event has arrived).
pub async fn get(pool: &PgPool, user: Uuid) -> Result<ProfileRow, Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM profiles WHERE user_id = $1 AND username IS NOT NULL"
    )))
    .bind(user)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound)
}

/// Applies an edit to the user's profile and returns it. An edit before the registration event
/// is kept, and shown once the event arrives.
pub async fn edit(pool: &PgPool, user: Uuid, edit: Edit) -> Result<ProfileRow, Error> {
    let (set_bio, bio) = match edit.bio {
        Change::Keep => (false, None),
        Change::Set(value) => (true, Some(value)),
        Change::Clear => (true, None),
    };
    let (set_avatar, avatar) = match edit.avatar_url {
        Change::Keep => (false, None),
        Change::Set(value) => (true, Some(value)),
        Change::Clear => (true, None),
    };
    let row: ProfileRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO profiles AS p (user_id, display_name, bio, avatar_url, updated_at)
         VALUES ($1, $2, $4, $6, now())
         ON CONFLICT (user_id) DO UPDATE SET
             display_name = COALESCE($2, p.display_name),
             bio = CASE WHEN $3 THEN $4 ELSE p.bio END,
             avatar_url = CASE WHEN $5 THEN $6 ELSE p.avatar_url END,
             updated_at = now()
         RETURNING {COLUMNS}"
    )))
    .bind(user)
    .bind(edit.display_name)
    .bind(set_bio)
    .bind(bio)
    .bind(set_avatar)
    .bind(avatar)
    .fetch_one(pool)
    .await?;
    if row.username.is_none() {
        // Stored; it shows once the registration event arrives.
        return Err(Error::NotFound);
    }
    Ok(row)
}

/// Profiles with usernames in `[from, to)`, ordered by username.
pub async fn search(
    pool: &PgPool,
    from: &str,
    to: Option<&str>,
    limit: u32,
) -> Result<Vec<ProfileRow>, Error> {
    // Two shapes rather than `($2 IS NULL OR ...)`, so the plan is always a plain range scan.
    let query = match to {
        Some(to) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM profiles
             WHERE username IS NOT NULL AND username >= $1 AND username < $2
             ORDER BY username LIMIT $3"
        )))
        .bind(from)
        .bind(to),
        None => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM profiles
             WHERE username IS NOT NULL AND username >= $1 AND $2::text IS NULL
             ORDER BY username LIMIT $3"
        )))
        .bind(from)
        .bind(None::<String>),
    };
    Ok(query.bind(i64::from(limit)).fetch_all(pool).await?)
}

/// Milliseconds since the epoch.
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}
