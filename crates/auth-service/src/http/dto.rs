//! Request and response bodies of the public routes, as the OpenAPI document shows them.
//! Timestamps are RFC 3339 UTC strings; unknown request fields are ignored.

use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use utoipa::ToSchema;

use crate::{
    service::{IssuedTokens, NewApiKey, SdkTokens},
    store::{ApiKey, AuditEntry, Client, PersonalAccessToken, RateLimit, Session, User},
};

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SignupRequest {
    pub name: String,
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// Optional when the `pc_refresh` cookie is sent.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub role: String,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            name: u.name.clone(),
            email: u.email.clone(),
            role: u.role.as_str().to_owned(),
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    pub device: String,
    pub ip: String,
    pub created_at: String,
    pub last_activity: String,
    pub expires_at: String,
    pub current: bool,
}

impl SessionView {
    pub fn new(s: &Session, current: bool) -> Self {
        Self {
            id: s.id.to_string(),
            device: s.device.clone(),
            ip: s.ip.clone(),
            created_at: rfc3339(s.created_at),
            last_activity: rfc3339(s.last_activity),
            expires_at: rfc3339(s.expires_at),
            current,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignedInResponse {
    pub user: UserView,
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access token lifetime in seconds.
    pub expires_in: u64,
    pub session: SessionView,
}

impl SignedInResponse {
    pub fn new(user: &User, tokens: IssuedTokens) -> Self {
        Self {
            user: user.into(),
            session: SessionView::new(&tokens.session, true),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            token_type: "Bearer",
            expires_in: tokens.expires_in,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentSessionView {
    #[serde(flatten)]
    pub session: SessionView,
    /// When the session ends unless used again.
    pub idle_expires_at: String,
    pub idle_seconds_left: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionsResponse {
    pub sessions: Vec<SessionView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndedSessionsResponse {
    pub ended: usize,
    pub session_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    pub id: String,
    pub action: String,
    pub outcome: String,
    pub ip: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub created_at: String,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id.to_string(),
            action: e.action,
            outcome: e.outcome,
            ip: e.ip,
            detail: e.detail,
            created_at: rfc3339(e.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditResponse {
    pub entries: Vec<AuditEntryView>,
    /// Pass as `?cursor=` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `?limit=&cursor=` of the paginated listings.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageQuery {
    /// Entries per page, 1 to 100 (default 20).
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordRules {
    pub min_length: usize,
    pub max_length: usize,
    pub min_strength_score: u8,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigView {
    pub session_timeout_minutes: u64,
    pub session_lifetime_hours: u64,
    pub max_sessions_per_user: u32,
    pub access_token_expires_in: u64,
    pub refresh_token_expires_in: u64,
    pub refresh_reuse_grace_seconds: u64,
    pub password: PasswordRules,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreatePatRequest {
    pub name: String,
    /// Default `["*"]`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// 1 to 365; absent for a token that does not expire.
    #[serde(default)]
    pub expires_in_days: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatCreatedView {
    pub id: String,
    pub name: String,
    /// Shown once.
    pub token: String,
    pub prefix: String,
    pub last_four: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub last_four: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expired: bool,
}

impl PatView {
    pub fn new(p: &PersonalAccessToken, now: OffsetDateTime) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name.clone(),
            prefix: p.prefix.clone(),
            last_four: p.last_four.clone(),
            scopes: p.scopes.to_vec(),
            expires_at: p.expires_at.map(rfc3339),
            created_at: rfc3339(p.created_at),
            last_used_at: p.last_used_at.map(rfc3339),
            expired: p.expires_at.is_some_and(|e| e <= now),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatsResponse {
    pub tokens: Vec<PatView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginLimitsView {
    pub failures_per_account_and_ip: &'static str,
    pub failures_per_ip: &'static str,
    pub failures_per_account: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PatLimitsView {
    pub max: usize,
    pub used: usize,
    pub remaining: usize,
    pub max_expires_in_days: i64,
    pub rate_limits: LoginLimitsView,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterClientRequest {
    pub name: String,
    #[serde(default)]
    pub ip_allowlist: Option<Vec<String>>,
    #[serde(default)]
    pub allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RateLimitView {
    /// Requests per window; `null` clears the tenant's own limit.
    pub requests: Option<u64>,
    /// The window, e.g. `"1m"`.
    pub per: Option<String>,
}

impl RateLimitView {
    pub fn new(limit: Option<RateLimit>) -> Self {
        match limit {
            Some(l) => Self { requests: Some(l.requests), per: Some(format_window(l.per_ms)) },
            None => Self { requests: None, per: None },
        }
    }
}

/// The largest whole unit a window is written in (`90000` ms → `90s`).
fn format_window(ms: u64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientView {
    pub id: String,
    pub name: String,
    pub ip_allowlist: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub rate_limit: RateLimitView,
    pub created_at: String,
}

impl From<&Client> for ClientView {
    fn from(c: &Client) -> Self {
        Self {
            id: c.id.to_string(),
            name: c.name.clone(),
            ip_allowlist: c.ip_allowlist.clone(),
            allowed_origins: c.allowed_origins.clone(),
            rate_limit: RateLimitView::new(c.rate_limit),
            created_at: rfc3339(c.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewKeyView {
    pub id: String,
    pub name: String,
    /// Shown once.
    pub key: String,
    pub prefix: String,
    pub last_four: String,
    pub scopes: Vec<String>,
    pub created_at: String,
}

impl From<&NewApiKey> for NewKeyView {
    fn from(k: &NewApiKey) -> Self {
        Self {
            id: k.key.id.to_string(),
            name: k.key.name.clone(),
            key: k.secret.clone(),
            prefix: k.key.prefix.clone(),
            last_four: k.key.last_four.clone(),
            scopes: k.key.scopes.to_vec(),
            created_at: rfc3339(k.key.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredClientResponse {
    pub client: ClientView,
    pub api_key: NewKeyView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientsResponse {
    pub clients: Vec<ClientView>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateKeyRequest {
    #[serde(default)]
    pub name: Option<String>,
    /// Default `["*"]`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub last_four: String,
    pub scopes: Vec<String>,
    /// `active`, `rotating` (valid until `expires_at`), `expired` or `revoked`.
    pub status: &'static str,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub rotated_to: Option<String>,
}

impl KeyView {
    pub fn new(k: &ApiKey, now: OffsetDateTime) -> Self {
        let status = match (k.revoked_at, k.expires_at) {
            (Some(_), _) => "revoked",
            (None, Some(e)) if e <= now => "expired",
            (None, Some(_)) => "rotating",
            (None, None) => "active",
        };
        Self {
            id: k.id.to_string(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            last_four: k.last_four.clone(),
            scopes: k.scopes.to_vec(),
            status,
            created_at: rfc3339(k.created_at),
            last_used_at: k.last_used_at.map(rfc3339),
            expires_at: k.expires_at.map(rfc3339),
            rotated_to: k.rotated_to.map(|id| id.to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeysResponse {
    pub api_keys: Vec<KeyView>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RotateRequest {
    /// Default 86400, at most 30 days.
    #[serde(default)]
    pub grace_period_seconds: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviousKeyView {
    pub id: String,
    pub expires_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedResponse {
    pub api_key: NewKeyView,
    pub previous_key: PreviousKeyView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IpAllowlistBody {
    pub ip_allowlist: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OriginsBody {
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SdkSessionRequest {
    pub external_user_id: String,
    /// Default: all of the key's scopes.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SdkSessionResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

impl From<SdkTokens> for SdkSessionResponse {
    fn from(t: SdkTokens) -> Self {
        Self {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            token_type: "Bearer",
            expires_in: t.expires_in,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: String,
}

impl From<&User> for AdminUserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            name: u.name.clone(),
            email: u.email.clone(),
            role: u.role.as_str().to_owned(),
            disabled: u.disabled,
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUsersResponse {
    pub users: Vec<AdminUserView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleRequest {
    /// `member` or `admin`.
    pub role: String,
}
