//! Reading a conversation's messages back.

use sqlx::PgPool;
use uuid::Uuid;

use super::{MESSAGE_COLUMNS, MessageRow};
use crate::{domain::Page, error::Error};

/// A page of a conversation's messages, if `caller` is a member.
pub async fn history(
    pool: &PgPool,
    caller: Uuid,
    conversation: Uuid,
    page: Page,
    limit: i64,
) -> Result<Vec<MessageRow>, Error> {
    let mut conn = pool.acquire().await?;
    let member: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = $1 AND user_id = $2)",
    )
    .bind(conversation)
    .bind(caller)
    .fetch_one(&mut *conn)
    .await?;
    if !member {
        return Err(Error::NotFound);
    }
    let (condition, order, bound) = match page {
        Page::After(after) => ("seq > $2", "ASC", after),
        Page::Before(before) => ("seq < $2", "DESC", before),
        Page::Newest => ("seq <= $2", "DESC", i64::MAX),
    };
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND {condition} ORDER BY seq {order} LIMIT $3"
    )))
    .bind(conversation)
    .bind(bound)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}
