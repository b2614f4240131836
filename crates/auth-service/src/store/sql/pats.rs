//! Personal access tokens: stored by hash, listed for their user, revoked by their user, and
//! stamped when used.

use auth_contract::scope::Scopes;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Affected as _, Dialect, Sql};
use crate::store::{PersonalAccessToken, StoreError, StoreResult, from_ms, map_sqlx, parse_uuid, to_ms};

const PAT_COLUMNS: &str = "id, user_id, name, token_hash, prefix, last_four, scopes, created_at, expires_at, last_used_at, revoked_at, legacy_id";

/// A `personal_access_tokens` row as stored.
#[derive(sqlx::FromRow)]
struct PatRow {
    id: String,
    user_id: String,
    name: String,
    token_hash: String,
    prefix: String,
    last_four: String,
    scopes: String,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    legacy_id: Option<String>,
}

impl TryFrom<PatRow> for PersonalAccessToken {
    type Error = StoreError;

    fn try_from(row: PatRow) -> StoreResult<Self> {
        Ok(Self {
            id: parse_uuid(&row.id)?,
            user_id: parse_uuid(&row.user_id)?,
            name: row.name,
            token_hash: row.token_hash,
            prefix: row.prefix,
            last_four: row.last_four,
            scopes: Scopes::from_text(&row.scopes),
            created_at: from_ms(row.created_at),
            expires_at: row.expires_at.map(from_ms),
            last_used_at: row.last_used_at.map(from_ms),
            revoked_at: row.revoked_at.map(from_ms),
            legacy_id: row.legacy_id,
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
    pub(crate) async fn insert_pat(&self, pat: &PersonalAccessToken) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO personal_access_tokens \
             (id, user_id, name, token_hash, prefix, last_four, scopes, created_at, expires_at, last_used_at, legacy_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(pat.id.to_string())
        .bind(pat.user_id.to_string())
        .bind(&pat.name)
        .bind(&pat.token_hash)
        .bind(&pat.prefix)
        .bind(&pat.last_four)
        .bind(pat.scopes.to_text())
        .bind(to_ms(pat.created_at))
        .bind(pat.expires_at.map(to_ms))
        .bind(pat.last_used_at.map(to_ms))
        .bind(pat.legacy_id.clone())
        .execute(self.pool)
        .await
        .map(drop)
        .map_err(map_sqlx)
    }

    pub(crate) async fn pat_by_hash(&self, hash: &str) -> StoreResult<Option<PersonalAccessToken>> {
        let sql =
            sqlx::AssertSqlSafe(format!("SELECT {PAT_COLUMNS} FROM personal_access_tokens WHERE token_hash = $1"));
        let row: Option<PatRow> = sqlx::query_as(sql).bind(hash).fetch_optional(self.pool).await.map_err(map_sqlx)?;
        row.map(PersonalAccessToken::try_from).transpose()
    }

    pub(crate) async fn pats_for_user(&self, user_id: Uuid) -> StoreResult<Vec<PersonalAccessToken>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {PAT_COLUMNS} FROM personal_access_tokens WHERE user_id = $1 AND revoked_at IS NULL \
             ORDER BY created_at DESC, id DESC"
        ));
        let rows: Vec<PatRow> =
            sqlx::query_as(sql).bind(user_id.to_string()).fetch_all(self.pool).await.map_err(map_sqlx)?;
        rows.into_iter().map(PersonalAccessToken::try_from).collect()
    }

    pub(crate) async fn revoke_pat(&self, user_id: Uuid, id: Uuid, at: OffsetDateTime) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE personal_access_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(to_ms(at))
        .bind(id.to_string())
        .bind(user_id.to_string())
        .execute(self.pool)
        .await
        .map_err(map_sqlx)?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn touch_pat(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
        self.stamp("UPDATE personal_access_tokens SET last_used_at = $1 WHERE id = $2", at, id).await.map(drop)
    }
}
