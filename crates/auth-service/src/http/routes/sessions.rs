//! The caller's sessions on every device, activity, and the security audit trail, and their
//! bodies (`SessionView` is also part of a sign-in's answer).

use axum::{
    Json,
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
    http::StatusCode,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::Error,
    http::{
        dto::{PageQuery, rfc3339},
        error::Problem,
    },
    service::{
        AuthService, ClientMeta, Principal,
        sessions::{AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT},
    },
    store::{AuditEntry, Session},
};

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

fn current_view(service: &AuthService, session: &Session) -> CurrentSessionView {
    let deadline = service.idle_deadline(session);
    CurrentSessionView {
        session: SessionView::new(session, true),
        idle_expires_at: rfc3339(deadline),
        idle_seconds_left: (deadline - service.now()).whole_seconds().max(0),
    }
}

/// The current session: device, IP, times and idle time left.
#[utoipa::path(get, path = "/session", tag = "sessions", security(("bearer" = [])), responses(
    (status = 200, body = CurrentSessionView), (status = 401, response = Problem),
))]
pub async fn current(State(service): State<AuthService>, principal: Principal) -> Json<CurrentSessionView> {
    Json(current_view(&service, &principal.session))
}

/// Every live session of the caller, the current one marked.
#[utoipa::path(get, path = "/sessions", tag = "sessions", security(("bearer" = [])), responses(
    (status = 200, body = SessionsResponse), (status = 401, response = Problem),
))]
pub async fn list(State(service): State<AuthService>, principal: Principal) -> Result<Json<SessionsResponse>, Error> {
    let sessions = service.sessions(&principal).await?;
    Ok(Json(SessionsResponse {
        sessions: sessions.iter().map(|s| SessionView::new(s, s.id == principal.session.id)).collect(),
    }))
}

/// Records activity now, resetting the idle timer.
#[utoipa::path(post, path = "/activity", tag = "sessions", security(("bearer" = [])), responses(
    (status = 200, body = CurrentSessionView), (status = 401, response = Problem),
))]
pub async fn activity(
    State(service): State<AuthService>,
    principal: Principal,
) -> Result<Json<CurrentSessionView>, Error> {
    let session = service.record_activity(&principal).await?;
    Ok(Json(current_view(&service, &session)))
}

/// Ends one of the caller's sessions (any device, the current one included).
#[utoipa::path(delete, path = "/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(("id" = String, Path, description = "session id")),
    responses((status = 204), (status = 401, response = Problem), (status = 404, response = Problem)),
)]
pub async fn end_one(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Error> {
    // An id that is not even text names no session of the caller's.
    let Path(id) = id.map_err(|_| Error::NotFound)?;
    let id = Uuid::parse_str(&id).map_err(|_| Error::NotFound)?;
    service.end_session(&principal, id, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the caller except the current one.
#[utoipa::path(delete, path = "/sessions", tag = "sessions", security(("bearer" = [])), responses(
    (status = 200, body = EndedSessionsResponse), (status = 401, response = Problem),
))]
pub async fn end_others(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
) -> Result<Json<EndedSessionsResponse>, Error> {
    let ended = service.end_other_sessions(&principal, &meta).await?;
    Ok(Json(EndedSessionsResponse { ended: ended.len(), session_ids: ended.iter().map(Uuid::to_string).collect() }))
}

/// The caller's security events, newest first.
#[utoipa::path(get, path = "/audit", tag = "sessions", security(("bearer" = [])), params(PageQuery), responses(
    (status = 200, body = AuditResponse), (status = 401, response = Problem), (status = 422, response = Problem),
))]
pub async fn audit(
    State(service): State<AuthService>,
    principal: Principal,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<AuditResponse>, Error> {
    let Query(query) = query.map_err(|_| Error::validation("query", "is not a valid query string"))?;
    let limit = match query.limit.as_deref() {
        None => AUDIT_DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=AUDIT_MAX_LIMIT).contains(n))
            .ok_or_else(|| Error::validation("limit", format!("must be a number from 1 to {AUDIT_MAX_LIMIT}")))?,
    };
    let cursor = query
        .cursor
        .as_deref()
        .map(|raw| raw.parse::<i64>().map_err(|_| Error::validation("cursor", "is not a cursor this service issued")))
        .transpose()?;
    let (entries, next) = service.audit_log(&principal, cursor, limit).await?;
    Ok(Json(AuditResponse {
        entries: entries.into_iter().map(AuditEntryView::from).collect(),
        next_cursor: next.map(|id| id.to_string()),
    }))
}
