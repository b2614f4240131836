//! Administration routes (role `admin`): users, disable and enable, role changes, and their
//! bodies.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::PathRejection, rejection::QueryRejection},
    http::StatusCode,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::Error,
    http::{
        dto::{PageQuery, rfc3339},
        error::Problem,
        extract::{ApiJson, page, path_param},
    },
    service::{AuthService, ClientMeta, Principal},
    store::{User, to_ms},
};

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

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

fn parse_cursor(raw: &str) -> Option<(i64, Uuid)> {
    let (ms, id) = raw.split_once('.')?;
    Some((ms.parse().ok()?, Uuid::parse_str(id).ok()?))
}

/// Every user, newest first.
#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("bearer" = [])), params(PageQuery), responses(
    (status = 200, body = AdminUsersResponse), (status = 401, response = Problem), (status = 403, response = Problem),
    (status = 422, response = Problem),
))]
pub async fn users(
    State(service): State<AuthService>,
    principal: Principal,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<AdminUsersResponse>, Error> {
    let (limit, cursor) = page(query, DEFAULT_LIMIT, MAX_LIMIT)?;
    let cursor = cursor
        .map(|raw| parse_cursor(&raw).ok_or_else(|| Error::validation("cursor", "is not a cursor this service issued")))
        .transpose()?;
    let users = service.admin_users(&principal, cursor, limit).await?;
    let next_cursor = (users.len() == usize::try_from(limit).unwrap_or(usize::MAX))
        .then(|| users.last().map(|u| format!("{}.{}", to_ms(u.created_at), u.id)))
        .flatten();
    Ok(Json(AdminUsersResponse { users: users.iter().map(AdminUserView::from).collect(), next_cursor }))
}

/// Disables a user: sessions, tokens and sockets end at once; login is refused.
#[utoipa::path(post, path = "/admin/users/{id}/disable", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, response = Problem), (status = 404, response = Problem), (status = 422, response = Problem)),
)]
pub async fn disable(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Error> {
    let id = path_param(id)?;
    service.disable_user(&principal, id, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enables a disabled user again.
#[utoipa::path(post, path = "/admin/users/{id}/enable", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 403, response = Problem), (status = 404, response = Problem)),
)]
pub async fn enable(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Error> {
    let id = path_param(id)?;
    service.enable_user(&principal, id, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a user's role.
#[utoipa::path(put, path = "/admin/users/{id}/role", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RoleRequest,
    responses((status = 200, body = AdminUserView), (status = 403, response = Problem), (status = 404, response = Problem), (status = 422, response = Problem)),
)]
pub async fn role(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    id: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<RoleRequest>,
) -> Result<Json<AdminUserView>, Error> {
    let id = path_param(id)?;
    let role =
        body.role.parse().map_err(|e: auth_contract::role::UnknownRole| Error::validation("role", e.to_string()))?;
    let user = service.set_role(&principal, id, role, &meta).await?;
    Ok(Json(AdminUserView::from(&user)))
}
