//! Service tokens issued to internal services (stored by hash, so every replica accepts them)
//! and revoked access-token ids (jtis), kept until the token they name would have expired.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Dialect, Sql};
use crate::store::{ServiceToken, StoreError, StoreResult, from_ms, map_sqlx, parse_uuid, to_ms};

/// A `service_tokens` row as stored.
#[derive(sqlx::FromRow)]
struct ServiceTokenRow {
    id: String,
    service_name: String,
    token_hash: String,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<ServiceTokenRow> for ServiceToken {
    type Error = StoreError;

    fn try_from(row: ServiceTokenRow) -> StoreResult<Self> {
        Ok(Self {
            id: parse_uuid(&row.id)?,
            service_name: row.service_name,
            token_hash: row.token_hash,
            created_at: from_ms(row.created_at),
            expires_at: from_ms(row.expires_at),
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
    pub(crate) async fn insert_service_token(&self, token: &ServiceToken) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO service_tokens (id, service_name, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token.id.to_string())
        .bind(&token.service_name)
        .bind(&token.token_hash)
        .bind(to_ms(token.created_at))
        .bind(to_ms(token.expires_at))
        .execute(self.pool)
        .await
        .map(drop)
        .map_err(map_sqlx)
    }

    pub(crate) async fn service_token_by_hash(&self, hash: &str) -> StoreResult<Option<ServiceToken>> {
        let row: Option<ServiceTokenRow> = sqlx::query_as(
            "SELECT id, service_name, token_hash, created_at, expires_at FROM service_tokens WHERE token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(self.pool)
        .await
        .map_err(map_sqlx)?;
        row.map(ServiceToken::try_from).transpose()
    }

    pub(crate) async fn service_token(&self, id: Uuid) -> StoreResult<Option<ServiceToken>> {
        let row: Option<ServiceTokenRow> = sqlx::query_as(
            "SELECT id, service_name, token_hash, created_at, expires_at FROM service_tokens WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.pool)
        .await
        .map_err(map_sqlx)?;
        row.map(ServiceToken::try_from).transpose()
    }

    pub(crate) async fn revoke_jti(&self, jti: &str, expires_at: OffsetDateTime) -> StoreResult<()> {
        sqlx::query("INSERT INTO revoked_jtis (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
            .bind(jti)
            .bind(to_ms(expires_at))
            .execute(self.pool)
            .await
            .map(drop)
            .map_err(map_sqlx)
    }

    pub(crate) async fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM revoked_jtis WHERE jti = $1")
            .bind(jti)
            .fetch_optional(self.pool)
            .await
            .map_err(map_sqlx)?;
        Ok(row.is_some())
    }
}
