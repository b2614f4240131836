//! Storage: the [`Store`] trait the service layer uses, its records, and the PostgreSQL and
//! SQLite implementations (sqlx runtime queries; the SQL text is shared, see `sql.rs`).
//!
//! Timestamps are stored as Unix milliseconds (`BIGINT`) and ids as text UUIDs in both
//! backends, so ordering and comparison mean the same thing everywhere.

mod postgres;
mod sql;
mod sqlite;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::role::Role;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("unique constraint violated: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub device: String,
    pub user_agent: Option<String>,
    pub ip: String,
    pub created_at: OffsetDateTime,
    pub last_activity: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub ended_at: Option<OffsetDateTime>,
    pub end_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub id: Uuid,
    pub token_hash: String,
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub spent_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    pub user_id: Option<Uuid>,
    pub action: &'static str,
    pub outcome: &'static str,
    pub ip: Option<String>,
    pub detail: serde_json::Value,
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub user_id: Option<Uuid>,
    pub action: String,
    pub outcome: String,
    pub ip: Option<String>,
    pub detail: serde_json::Value,
    pub created_at: OffsetDateTime,
}

/// How many rows a cleanup removed (or would remove, on a dry run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CleanupReport {
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub revoked_jtis: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Readiness: the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Fails with [`StoreError::Conflict`] when the email is taken.
    async fn insert_user(&self, user: &User) -> StoreResult<()>;
    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn set_password_hash(
        &self,
        user_id: Uuid,
        hash: &str,
        at: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Creates a session together with its first refresh token.
    async fn insert_session(&self, session: &Session, refresh: &RefreshToken) -> StoreResult<()>;
    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>>;
    /// Sessions not ended, not past their lifetime and active since `idle_cutoff`, oldest first.
    async fn live_sessions(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<Vec<Session>>;
    async fn count_live_sessions(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<i64>;
    async fn touch_session(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()>;
    /// Ends the given sessions; returns the ids that were live and are now ended.
    async fn end_sessions(
        &self,
        ids: &[Uuid],
        at: OffsetDateTime,
        reason: &str,
    ) -> StoreResult<Vec<Uuid>>;

    async fn refresh_token_by_hash(&self, hash: &str) -> StoreResult<Option<RefreshToken>>;
    /// Atomically spends `old` (only if unspent) and stores `new`; false when `old` was
    /// already spent, in which case nothing changes.
    async fn rotate_refresh_token(
        &self,
        old: Uuid,
        spent_at: OffsetDateTime,
        new: &RefreshToken,
    ) -> StoreResult<bool>;

    async fn revoke_jti(&self, jti: &str, expires_at: OffsetDateTime) -> StoreResult<()>;
    async fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool>;

    async fn insert_audit(&self, entry: &NewAudit) -> StoreResult<()>;
    /// Newest first, strictly older than `before` (an entry id) when given.
    async fn audit_for_user(
        &self,
        user_id: Uuid,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>>;

    /// Removes what can never be used again: sessions past their lifetime or ended before
    /// `ended_before`, refresh tokens past expiry, revoked jtis past their token's expiry.
    async fn cleanup(
        &self,
        now: OffsetDateTime,
        ended_before: OffsetDateTime,
        dry_run: bool,
    ) -> StoreResult<CleanupReport>;
}

/// Unix milliseconds, the storage form of every timestamp.
pub(crate) fn to_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub(crate) fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn parse_uuid(text: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(text)
        .map_err(|e| StoreError::Other(format!("bad id `{text}` in database: {e}")))
}

pub(crate) fn map_sqlx(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => StoreError::Unavailable(err.to_string()),
        _ => StoreError::Other(err.to_string()),
    }
}
