//! Request and response bodies of the public routes, as the OpenAPI document shows them.
//! Timestamps are RFC 3339 UTC strings; unknown request fields are ignored.

use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use utoipa::ToSchema;

use crate::{
    service::IssuedTokens,
    store::{AuditEntry, Session, User},
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
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
