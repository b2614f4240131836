//! The security audit log (written as things happen, read newest first per user) and cleanup,
//! which removes in one transaction every row that can never be used again.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Affected as _, Count, Dialect, Sql};
use crate::store::{
    AuditEntry, CleanupReport, NewAudit, StoreError, StoreResult, from_ms, map_sqlx, parse_uuid, to_ms,
};

/// An `audit_log` row as stored: `detail` is JSON text.
#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    user_id: Option<String>,
    action: String,
    outcome: String,
    ip: Option<String>,
    detail: String,
    created_at: i64,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.id,
            user_id: row.user_id.as_deref().map(parse_uuid).transpose()?,
            action: row.action,
            outcome: row.outcome,
            ip: row.ip,
            detail: serde_json::from_str(&row.detail).unwrap_or(serde_json::Value::Null),
            created_at: from_ms(row.created_at),
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
    pub(crate) async fn insert_audit(&self, entry: &NewAudit) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (user_id, action, outcome, ip, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(entry.user_id.map(|u| u.to_string()))
        .bind(entry.action)
        .bind(entry.outcome)
        .bind(&entry.ip)
        .bind(entry.detail.to_string())
        .bind(to_ms(entry.at))
        .execute(self.pool)
        .await
        .map(drop)
        .map_err(map_sqlx)
    }

    pub(crate) async fn audit_for_user(
        &self,
        user_id: Uuid,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, user_id, action, outcome, ip, detail, created_at FROM audit_log \
             WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(user_id.to_string())
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(self.pool)
        .await
        .map_err(map_sqlx)?;
        rows.into_iter().map(AuditEntry::try_from).collect()
    }

    pub(crate) async fn cleanup(
        &self,
        now: OffsetDateTime,
        ended_before: OffsetDateTime,
        dry_run: bool,
    ) -> StoreResult<CleanupReport> {
        const GONE_SESSIONS: &str =
            "SELECT id FROM sessions WHERE expires_at <= $1 OR (ended_at IS NOT NULL AND ended_at <= $2)";
        const GONE_SDK: &str =
            "SELECT id FROM sdk_sessions WHERE expires_at <= $1 OR (ended_at IS NOT NULL AND ended_at <= $2)";
        // Refresh tokens first: they go with their sessions.
        let tables = [
            format!(
                "FROM refresh_tokens WHERE expires_at <= $1 OR session_id IN ({GONE_SESSIONS}) OR session_id IN ({GONE_SDK})"
            ),
            "FROM sessions WHERE expires_at <= $1 OR (ended_at IS NOT NULL AND ended_at <= $2)".to_owned(),
            "FROM sdk_sessions WHERE expires_at <= $1 OR (ended_at IS NOT NULL AND ended_at <= $2)".to_owned(),
            "FROM revoked_jtis WHERE expires_at <= $1".to_owned(),
            "FROM personal_access_tokens WHERE expires_at <= $1 OR revoked_at <= $2".to_owned(),
            "FROM api_keys WHERE expires_at <= $1 OR revoked_at <= $2".to_owned(),
            "FROM service_tokens WHERE expires_at <= $1".to_owned(),
        ];
        let now = to_ms(now);
        let ended_before = to_ms(ended_before);
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        let mut counts = [0u64; 7];
        for (slot, from) in counts.iter_mut().zip(tables.iter()) {
            *slot = if dry_run {
                let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) AS n {from}"));
                let count: Count =
                    sqlx::query_as(sql).bind(now).bind(ended_before).fetch_one(&mut *tx).await.map_err(map_sqlx)?;
                u64::try_from(count.n).unwrap_or(0)
            } else {
                let sql = sqlx::AssertSqlSafe(format!("DELETE {from}"));
                sqlx::query(sql).bind(now).bind(ended_before).execute(&mut *tx).await.map_err(map_sqlx)?.rows_affected()
            };
        }
        tx.commit().await.map_err(map_sqlx)?;
        let [refresh_tokens, sessions, sdk_sessions, revoked_jtis, personal_access_tokens, api_keys, service_tokens] =
            counts;
        Ok(CleanupReport {
            sessions,
            sdk_sessions,
            refresh_tokens,
            revoked_jtis,
            personal_access_tokens,
            api_keys,
            service_tokens,
        })
    }
}
