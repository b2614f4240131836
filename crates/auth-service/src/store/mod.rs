//! Storage: the [`Store`] trait the service layer uses, its records, and the PostgreSQL and
//! SQLite implementations (sqlx runtime queries; the SQL is shared, one file per aggregate
//! under `sql/`).
//!
//! Timestamps are stored as Unix milliseconds (`BIGINT`) and ids as text UUIDs in both
//! backends, so ordering and comparison mean the same thing everywhere.

mod cache;
mod migrate;
mod postgres;
mod sql;
mod sqlite;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

// The records speak the contract's vocabulary directly (not through `domain`, whose
// adapters know the service's errors).
use auth_contract::{role::Role, scope::Scopes};

pub use cache::CachedStore;
pub use migrate::{Migrated, Migration, migrate};
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

/// Whose session a refresh token continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    User,
    Sdk,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Sdk => "sdk",
        }
    }

    pub fn parse(text: &str) -> StoreResult<Self> {
        match text {
            "user" => Ok(Self::User),
            "sdk" => Ok(Self::Sdk),
            other => Err(StoreError::Other(format!("unknown session kind `{other}`"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub id: Uuid,
    pub token_hash: String,
    pub session_id: Uuid,
    pub session_kind: SessionKind,
    /// The user, for user sessions.
    pub user_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub spent_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalAccessToken {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub token_hash: String,
    pub prefix: String,
    pub last_four: String,
    pub scopes: Scopes,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    /// Set for a token imported from the system a team ran before (`cargo xtask
    /// import-pats`): its id there. `None` for tokens issued here.
    pub legacy_id: Option<String>,
}

/// A tenant's own request budget, applied by the gateway instead of the route default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u64,
    pub per_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub ip_allowlist: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub rate_limit: Option<RateLimit>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: Uuid,
    pub client_id: Uuid,
    pub name: String,
    pub key_hash: String,
    pub prefix: String,
    pub last_four: String,
    pub scopes: Scopes,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    /// Set when rotated: the end of the grace period.
    pub expires_at: Option<OffsetDateTime>,
    pub rotated_to: Option<Uuid>,
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdkSession {
    pub id: Uuid,
    pub client_id: Uuid,
    pub api_key_id: Uuid,
    pub external_user_id: String,
    pub scopes: Scopes,
    pub ip: String,
    pub created_at: OffsetDateTime,
    pub last_activity: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub ended_at: Option<OffsetDateTime>,
    pub end_reason: Option<String>,
}

/// A service token issued to an internal service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceToken {
    pub id: Uuid,
    pub service_name: String,
    pub token_hash: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Which client field a change touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientChange {
    IpAllowlist(Vec<String>),
    AllowedOrigins(Vec<String>),
    RateLimit(Option<RateLimit>),
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
    pub sdk_sessions: u64,
    pub refresh_tokens: u64,
    pub revoked_jtis: u64,
    pub personal_access_tokens: u64,
    pub api_keys: u64,
    pub service_tokens: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Readiness: the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Fails with [`StoreError::Conflict`] when the email is taken.
    async fn insert_user(&self, user: &User) -> StoreResult<()>;
    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    async fn set_password_hash(&self, user_id: Uuid, hash: &str, at: OffsetDateTime) -> StoreResult<()>;
    /// Users newest first, strictly after `after` (created_at ms, id) when given.
    async fn list_users(&self, after: Option<(i64, Uuid)>, limit: u32) -> StoreResult<Vec<User>>;
    /// False when no such user.
    async fn set_user_disabled(&self, id: Uuid, disabled: bool, at: OffsetDateTime) -> StoreResult<bool>;
    async fn set_user_role(&self, id: Uuid, role: Role, at: OffsetDateTime) -> StoreResult<bool>;

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
    async fn count_live_sessions(&self, now: OffsetDateTime, idle_cutoff: OffsetDateTime) -> StoreResult<i64>;
    async fn touch_session(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()>;
    /// Ends the given sessions not ended yet (an expired one included, so its end is
    /// recorded); returns their ids.
    async fn end_sessions(&self, ids: &[Uuid], at: OffsetDateTime, reason: &str) -> StoreResult<Vec<Uuid>>;

    async fn refresh_token_by_hash(&self, hash: &str) -> StoreResult<Option<RefreshToken>>;
    /// Atomically spends `old` (only if unspent) and stores `new`; false when `old` was
    /// already spent, in which case nothing changes.
    async fn rotate_refresh_token(&self, old: Uuid, spent_at: OffsetDateTime, new: &RefreshToken) -> StoreResult<bool>;

    async fn insert_pat(&self, pat: &PersonalAccessToken) -> StoreResult<()>;
    async fn pat_by_hash(&self, hash: &str) -> StoreResult<Option<PersonalAccessToken>>;
    /// Not revoked, newest first (expired ones included).
    async fn pats_for_user(&self, user_id: Uuid) -> StoreResult<Vec<PersonalAccessToken>>;
    /// Revokes one of the user's PATs; false when it is not theirs or already revoked.
    async fn revoke_pat(&self, user_id: Uuid, id: Uuid, at: OffsetDateTime) -> StoreResult<bool>;
    async fn touch_pat(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()>;

    /// Creates a client together with its first API key.
    async fn insert_client(&self, client: &Client, key: &ApiKey) -> StoreResult<()>;
    async fn client(&self, id: Uuid) -> StoreResult<Option<Client>>;
    async fn clients_for_owner(&self, owner_id: Uuid) -> StoreResult<Vec<Client>>;
    async fn update_client(&self, id: Uuid, change: &ClientChange, at: OffsetDateTime) -> StoreResult<()>;
    /// Every client's allowed origins (for CORS preflight at the gateway).
    async fn all_allowed_origins(&self) -> StoreResult<Vec<String>>;

    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    async fn api_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>>;
    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>>;
    /// Oldest first, revoked ones included.
    async fn api_keys_for_client(&self, client_id: Uuid) -> StoreResult<Vec<ApiKey>>;
    /// Atomically marks `old` rotated (only if live and not yet rotated), valid until
    /// `grace_until`, and stores `new`; false when `old` was not rotatable.
    async fn rotate_api_key(&self, old: Uuid, grace_until: OffsetDateTime, new: &ApiKey) -> StoreResult<bool>;
    async fn revoke_api_key(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<bool>;
    async fn touch_api_key(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()>;

    async fn insert_sdk_session(&self, session: &SdkSession, refresh: &RefreshToken) -> StoreResult<()>;
    async fn sdk_session(&self, id: Uuid) -> StoreResult<Option<SdkSession>>;
    async fn touch_sdk_session(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()>;
    /// Ends one SDK session; false when it was already over.
    async fn end_sdk_session(&self, id: Uuid, at: OffsetDateTime, reason: &str) -> StoreResult<bool>;
    /// Ends every live SDK session opened with one of these keys; returns their ids.
    async fn end_sdk_sessions_for_keys(
        &self,
        key_ids: &[Uuid],
        at: OffsetDateTime,
        reason: &str,
    ) -> StoreResult<Vec<Uuid>>;

    async fn insert_service_token(&self, token: &ServiceToken) -> StoreResult<()>;
    async fn service_token_by_hash(&self, hash: &str) -> StoreResult<Option<ServiceToken>>;
    async fn service_token(&self, id: Uuid) -> StoreResult<Option<ServiceToken>>;

    async fn revoke_jti(&self, jti: &str, expires_at: OffsetDateTime) -> StoreResult<()>;
    async fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool>;

    async fn insert_audit(&self, entry: &NewAudit) -> StoreResult<()>;
    /// Newest first, strictly older than `before` (an entry id) when given.
    async fn audit_for_user(&self, user_id: Uuid, before: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEntry>>;

    /// Removes what can never be used again: sessions (user and SDK) past their lifetime or
    /// ended before `ended_before`, refresh tokens past expiry or of removed sessions, revoked
    /// jtis past their token's expiry, PATs expired or revoked before `ended_before`, API keys
    /// past their rotation grace or revoked before `ended_before`.
    async fn cleanup(
        &self,
        now: OffsetDateTime,
        ended_before: OffsetDateTime,
        dry_run: bool,
    ) -> StoreResult<CleanupReport>;
}

/// Unix milliseconds, the storage form of every timestamp.
pub fn to_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn parse_uuid(text: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(text).map_err(|e| StoreError::Other(format!("bad id `{text}` in database: {e}")))
}

/// SQLSTATEs that mean the database cannot serve now, not that the query was wrong:
/// connection exceptions (08), insufficient resources (53), operator intervention such as a
/// forced disconnect (57), and a database that does not exist (3D000).
fn is_outage_code(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57") || code == "3D000"
}

pub(crate) fn map_sqlx(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(db.message().to_owned()),
        sqlx::Error::Database(db) if db.code().is_some_and(|c| is_outage_code(&c)) => {
            StoreError::Unavailable(err.to_string())
        }
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(err.to_string())
        }
        _ => StoreError::Other(err.to_string()),
    }
}
