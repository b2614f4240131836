//! Refresh tokens: each continues a user or an SDK session, is stored with that session, and
//! is spent exactly once by rotation, which stores its successor in the same transaction.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Affected as _, Dialect, Sql};
use crate::store::{RefreshToken, SessionKind, StoreError, StoreResult, from_ms, map_sqlx, parse_uuid, to_ms};

/// A `refresh_tokens` row as stored.
#[derive(sqlx::FromRow)]
struct RefreshRow {
    id: String,
    token_hash: String,
    session_id: String,
    session_kind: String,
    user_id: Option<String>,
    created_at: i64,
    expires_at: i64,
    spent_at: Option<i64>,
}

impl TryFrom<RefreshRow> for RefreshToken {
    type Error = StoreError;

    fn try_from(row: RefreshRow) -> StoreResult<Self> {
        Ok(Self {
            id: parse_uuid(&row.id)?,
            token_hash: row.token_hash,
            session_id: parse_uuid(&row.session_id)?,
            session_kind: SessionKind::parse(&row.session_kind)?,
            user_id: row.user_id.as_deref().map(parse_uuid).transpose()?,
            created_at: from_ms(row.created_at),
            expires_at: from_ms(row.expires_at),
            spent_at: row.spent_at.map(from_ms),
        })
    }
}

impl<DB: Dialect> Sql<'_, DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    /// Stores a refresh token; sessions (user and SDK) call it inside their own transaction.
    pub(super) async fn insert_refresh<'e, E>(executor: E, refresh: &RefreshToken) -> StoreResult<()>
    where
        E: Executor<'e, Database = DB>,
    {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, token_hash, session_id, session_kind, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(refresh.id.to_string())
        .bind(&refresh.token_hash)
        .bind(refresh.session_id.to_string())
        .bind(refresh.session_kind.as_str())
        .bind(refresh.user_id.map(|u| u.to_string()))
        .bind(to_ms(refresh.created_at))
        .bind(to_ms(refresh.expires_at))
        .execute(executor)
        .await
        .map(drop)
        .map_err(map_sqlx)
    }

    pub(crate) async fn refresh_token_by_hash(&self, hash: &str) -> StoreResult<Option<RefreshToken>> {
        let row: Option<RefreshRow> = sqlx::query_as(
            "SELECT id, token_hash, session_id, session_kind, user_id, created_at, expires_at, spent_at \
             FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(self.pool)
        .await
        .map_err(map_sqlx)?;
        row.map(RefreshToken::try_from).transpose()
    }

    pub(crate) async fn rotate_refresh_token(
        &self,
        old: Uuid,
        spent_at: OffsetDateTime,
        new: &RefreshToken,
    ) -> StoreResult<bool> {
        // The UPDATE comes first so the transaction takes the write lock before reading:
        // of concurrent rotations exactly one sees the row unspent.
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        let spent = sqlx::query("UPDATE refresh_tokens SET spent_at = $1 WHERE id = $2 AND spent_at IS NULL")
            .bind(to_ms(spent_at))
            .bind(old.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        if spent.rows_affected() != 1 {
            tx.rollback().await.map_err(map_sqlx)?;
            return Ok(false);
        }
        Self::insert_refresh(&mut *tx, new).await?;
        let touch = match new.session_kind {
            SessionKind::User => "UPDATE sessions SET last_activity = $1 WHERE id = $2 AND last_activity < $1",
            SessionKind::Sdk => "UPDATE sdk_sessions SET last_activity = $1 WHERE id = $2 AND last_activity < $1",
        };
        sqlx::query(touch)
            .bind(to_ms(spent_at))
            .bind(new.session_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(true)
    }
}
