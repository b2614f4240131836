//! Personal access tokens: create (shown once), list (prefix and last four only), revoke,
//! and the caller's limits, and their bodies.

use axum::{
    Json,
    extract::{Path, State, rejection::PathRejection},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{
    error::Error,
    http::{
        dto::rfc3339,
        error::Problem,
        extract::{ApiJson, path_param},
    },
    service::{AuthService, ClientMeta, Principal},
    store::PersonalAccessToken,
};

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

/// Creates a personal access token; the token is in this response only. 403 `forbidden`: the
/// limit is reached.
#[utoipa::path(post, path = "/tokens", tag = "tokens", security(("bearer" = [])), request_body = CreatePatRequest, responses(
    (status = 201, body = PatCreatedView), (status = 401, response = Problem),
    (status = 403, response = Problem), (status = 422, response = Problem),
))]
pub async fn create(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    ApiJson(body): ApiJson<CreatePatRequest>,
) -> Result<(StatusCode, Json<PatCreatedView>), Error> {
    let created =
        service.create_pat(&principal, &body.name, body.scopes.as_deref(), body.expires_in_days, &meta).await?;
    let pat = &created.pat;
    Ok((
        StatusCode::CREATED,
        Json(PatCreatedView {
            id: pat.id.to_string(),
            name: pat.name.clone(),
            token: created.token.clone(),
            prefix: pat.prefix.clone(),
            last_four: pat.last_four.clone(),
            scopes: pat.scopes.to_vec(),
            expires_at: pat.expires_at.map(rfc3339),
            created_at: rfc3339(pat.created_at),
        }),
    ))
}

/// The caller's tokens, newest first, without secrets.
#[utoipa::path(get, path = "/tokens", tag = "tokens", security(("bearer" = [])), responses(
    (status = 200, body = PatsResponse), (status = 401, response = Problem),
))]
pub async fn list(State(service): State<AuthService>, principal: Principal) -> Result<Json<PatsResponse>, Error> {
    let now = service.now();
    let tokens = service.pats(&principal).await?.iter().map(|p| PatView::new(p, now)).collect();
    Ok(Json(PatsResponse { tokens }))
}

/// Revokes one of the caller's tokens at once.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    params(("id" = String, Path, description = "token id")),
    responses((status = 204), (status = 401, response = Problem), (status = 404, response = Problem)),
)]
pub async fn revoke(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Error> {
    service.revoke_pat(&principal, path_param(id)?, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many tokens the caller may still create, and the login limits that apply.
#[utoipa::path(get, path = "/tokens/limits", tag = "tokens", security(("bearer" = [])), responses(
    (status = 200, body = PatLimitsView), (status = 401, response = Problem),
))]
pub async fn limits(State(service): State<AuthService>, principal: Principal) -> Result<Json<PatLimitsView>, Error> {
    let (max, used) = service.pat_usage(&principal).await?;
    Ok(Json(PatLimitsView {
        max,
        used,
        remaining: max.saturating_sub(used),
        max_expires_in_days: crate::service::MAX_PAT_DAYS,
        rate_limits: LoginLimitsView {
            failures_per_account_and_ip: "10/15m",
            failures_per_ip: "100/15m",
            failures_per_account: "100/1h",
        },
    }))
}
