//! SDK sessions: opened by a client's backend with one of its API keys, stored with their
//! first refresh token, and ended one at a time or all at once for the keys that opened them.

use auth_contract::scope::Scopes;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Affected as _, Dialect, Sql};
use crate::store::{RefreshToken, SdkSession, StoreError, StoreResult, from_ms, map_sqlx, parse_uuid, to_ms};

const SDK_COLUMNS: &str = "id, client_id, api_key_id, external_user_id, scopes, ip, created_at, last_activity, expires_at, ended_at, end_reason";

/// An `sdk_sessions` row as stored.
#[derive(sqlx::FromRow)]
struct SdkSessionRow {
    id: String,
    client_id: String,
    api_key_id: String,
    external_user_id: String,
    scopes: String,
    ip: String,
    created_at: i64,
    last_activity: i64,
    expires_at: i64,
    ended_at: Option<i64>,
    end_reason: Option<String>,
}

impl TryFrom<SdkSessionRow> for SdkSession {
    type Error = StoreError;

    fn try_from(row: SdkSessionRow) -> StoreResult<Self> {
        Ok(Self {
            id: parse_uuid(&row.id)?,
            client_id: parse_uuid(&row.client_id)?,
            api_key_id: parse_uuid(&row.api_key_id)?,
            external_user_id: row.external_user_id,
            scopes: Scopes::from_text(&row.scopes),
            ip: row.ip,
            created_at: from_ms(row.created_at),
            last_activity: from_ms(row.last_activity),
            expires_at: from_ms(row.expires_at),
            ended_at: row.ended_at.map(from_ms),
            end_reason: row.end_reason,
        })
    }
}

/// An `id` column alone.
#[derive(sqlx::FromRow)]
struct IdRow {
    id: String,
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
    pub(crate) async fn insert_sdk_session(&self, session: &SdkSession, refresh: &RefreshToken) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        sqlx::query(
            "INSERT INTO sdk_sessions (id, client_id, api_key_id, external_user_id, scopes, ip, created_at, last_activity, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(session.id.to_string())
        .bind(session.client_id.to_string())
        .bind(session.api_key_id.to_string())
        .bind(&session.external_user_id)
        .bind(session.scopes.to_text())
        .bind(&session.ip)
        .bind(to_ms(session.created_at))
        .bind(to_ms(session.last_activity))
        .bind(to_ms(session.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        Self::insert_refresh(&mut *tx, refresh).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    pub(crate) async fn sdk_session(&self, id: Uuid) -> StoreResult<Option<SdkSession>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {SDK_COLUMNS} FROM sdk_sessions WHERE id = $1"));
        let row: Option<SdkSessionRow> =
            sqlx::query_as(sql).bind(id.to_string()).fetch_optional(self.pool).await.map_err(map_sqlx)?;
        row.map(SdkSession::try_from).transpose()
    }

    pub(crate) async fn touch_sdk_session(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
        self.stamp(
            "UPDATE sdk_sessions SET last_activity = $1 WHERE id = $2 AND ended_at IS NULL AND last_activity < $1",
            at,
            id,
        )
        .await
        .map(drop)
    }

    pub(crate) async fn end_sdk_session(&self, id: Uuid, at: OffsetDateTime, reason: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE sdk_sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL")
                .bind(to_ms(at))
                .bind(reason)
                .bind(id.to_string())
                .execute(self.pool)
                .await
                .map_err(map_sqlx)?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn end_sdk_sessions_for_keys(
        &self,
        key_ids: &[Uuid],
        at: OffsetDateTime,
        reason: &str,
    ) -> StoreResult<Vec<Uuid>> {
        let mut ended = Vec::new();
        for key in key_ids {
            let ids: Vec<IdRow> =
                sqlx::query_as("SELECT id FROM sdk_sessions WHERE api_key_id = $1 AND ended_at IS NULL")
                    .bind(key.to_string())
                    .fetch_all(self.pool)
                    .await
                    .map_err(map_sqlx)?;
            sqlx::query(
                "UPDATE sdk_sessions SET ended_at = $1, end_reason = $2 WHERE api_key_id = $3 AND ended_at IS NULL",
            )
            .bind(to_ms(at))
            .bind(reason)
            .bind(key.to_string())
            .execute(self.pool)
            .await
            .map_err(map_sqlx)?;
            for row in ids {
                ended.push(parse_uuid(&row.id)?);
            }
        }
        Ok(ended)
    }
}
