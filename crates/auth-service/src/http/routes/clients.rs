//! Clients (tenants): registration, listing, API keys (create, list, rotate, revoke), IP
//! allowlist, origins and the tenant's own rate limit, and their bodies. Owner only; anyone
//! else gets 404.

use axum::{
    Json,
    extract::{Path, Request, State, rejection::PathRejection},
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
        extract::{ApiJson, optional_json, path_pair, path_param},
    },
    service::{AuthService, ClientMeta, NewApiKey, Principal},
    store::{ApiKey, Client, ClientChange, RateLimit},
};

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

type IdPath = Result<Path<String>, PathRejection>;
type PairPath = Result<Path<(String, String)>, PathRejection>;

/// Registers a client; its first API key is in this response only.
#[utoipa::path(post, path = "/client/register", tag = "clients", security(("bearer" = [])), request_body = RegisterClientRequest, responses(
    (status = 201, body = RegisteredClientResponse), (status = 401, response = Problem), (status = 422, response = Problem),
))]
pub async fn register(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    ApiJson(body): ApiJson<RegisterClientRequest>,
) -> Result<(StatusCode, Json<RegisteredClientResponse>), Error> {
    let (client, key) = service
        .register_client(&principal, &body.name, body.ip_allowlist.as_deref(), body.allowed_origins.as_deref(), &meta)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RegisteredClientResponse { client: ClientView::from(&client), api_key: NewKeyView::from(&key) }),
    ))
}

/// The caller's clients.
#[utoipa::path(get, path = "/clients", tag = "clients", security(("bearer" = [])), responses(
    (status = 200, body = ClientsResponse), (status = 401, response = Problem),
))]
pub async fn list(State(service): State<AuthService>, principal: Principal) -> Result<Json<ClientsResponse>, Error> {
    let clients = service.clients(&principal).await?.iter().map(ClientView::from).collect();
    Ok(Json(ClientsResponse { clients }))
}

/// One of the caller's clients.
#[utoipa::path(get, path = "/client/{id}", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ClientView), (status = 401, response = Problem), (status = 404, response = Problem)),
)]
pub async fn get_one(
    State(service): State<AuthService>,
    principal: Principal,
    id: IdPath,
) -> Result<Json<ClientView>, Error> {
    let client = service.owned_client(&principal, path_param(id)?).await?;
    Ok(Json(ClientView::from(&client)))
}

/// Creates an API key; the key is in this response only.
#[utoipa::path(post, path = "/client/{id}/api-keys", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = CreateKeyRequest,
    responses((status = 201, body = NewKeyView), (status = 404, response = Problem), (status = 422, response = Problem)),
)]
pub async fn create_key(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    id: IdPath,
    request: Request,
) -> Result<(StatusCode, Json<NewKeyView>), Error> {
    let id = path_param(id)?;
    let body: CreateKeyRequest = optional_json(request).await?;
    let key = service.create_api_key(&principal, id, body.name.as_deref(), body.scopes.as_deref(), &meta).await?;
    Ok((StatusCode::CREATED, Json(NewKeyView::from(&key))))
}

/// The client's keys (no secrets), with their status.
#[utoipa::path(get, path = "/client/{id}/api-keys", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = KeysResponse), (status = 404, response = Problem)),
)]
pub async fn list_keys(
    State(service): State<AuthService>,
    principal: Principal,
    id: IdPath,
) -> Result<Json<KeysResponse>, Error> {
    let now = service.now();
    let keys = service.api_keys(&principal, path_param(id)?).await?;
    Ok(Json(KeysResponse { api_keys: keys.iter().map(|k| KeyView::new(k, now)).collect() }))
}

/// Issues a successor key; the old one keeps working for the grace period.
#[utoipa::path(post, path = "/client/{id}/api-keys/{key_id}/rotate", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path), ("key_id" = String, Path)), request_body = RotateRequest,
    responses((status = 201, body = RotatedResponse), (status = 404, response = Problem), (status = 422, response = Problem)),
)]
pub async fn rotate_key(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    ids: PairPath,
    request: Request,
) -> Result<(StatusCode, Json<RotatedResponse>), Error> {
    let (client_id, key_id) = path_pair(ids)?;
    let body: RotateRequest = optional_json(request).await?;
    let (key, grace_until) =
        service.rotate_api_key(&principal, client_id, key_id, body.grace_period_seconds, &meta).await?;
    Ok((
        StatusCode::CREATED,
        Json(RotatedResponse {
            api_key: NewKeyView::from(&key),
            previous_key: PreviousKeyView { id: key_id.to_string(), expires_at: rfc3339(grace_until) },
        }),
    ))
}

/// Revokes a key now.
#[utoipa::path(delete, path = "/client/{id}/api-keys/{key_id}", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path), ("key_id" = String, Path)),
    responses((status = 204), (status = 404, response = Problem)),
)]
pub async fn revoke_key(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    ids: PairPath,
) -> Result<StatusCode, Error> {
    let (client_id, key_id) = path_pair(ids)?;
    service.revoke_api_key(&principal, client_id, key_id, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The IP networks allowed to use the client's API keys (empty: any).
#[utoipa::path(get, path = "/client/{id}/ip-allowlist", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = IpAllowlistBody), (status = 404, response = Problem)),
)]
pub async fn get_ip_allowlist(
    State(service): State<AuthService>,
    principal: Principal,
    id: IdPath,
) -> Result<Json<IpAllowlistBody>, Error> {
    let client = service.owned_client(&principal, path_param(id)?).await?;
    Ok(Json(IpAllowlistBody { ip_allowlist: client.ip_allowlist }))
}

/// Replaces the IP allowlist (IPv4 and IPv6 CIDRs or addresses).
#[utoipa::path(put, path = "/client/{id}/ip-allowlist", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = IpAllowlistBody,
    responses((status = 200, body = IpAllowlistBody), (status = 404, response = Problem), (status = 422, response = Problem)),
)]
pub async fn put_ip_allowlist(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    id: IdPath,
    ApiJson(body): ApiJson<IpAllowlistBody>,
) -> Result<Json<IpAllowlistBody>, Error> {
    let id = path_param(id)?;
    service.owned_client(&principal, id).await?;
    let list = crate::domain::allowlist::parse_ip_allowlist("ip_allowlist", &body.ip_allowlist)?;
    let client = service.update_client(&principal, id, ClientChange::IpAllowlist(list), &meta).await?;
    Ok(Json(IpAllowlistBody { ip_allowlist: client.ip_allowlist }))
}

/// The browser origins allowed for the client's keys and SDK tokens (empty: none).
#[utoipa::path(get, path = "/client/{id}/origins", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = OriginsBody), (status = 404, response = Problem)),
)]
pub async fn get_origins(
    State(service): State<AuthService>,
    principal: Principal,
    id: IdPath,
) -> Result<Json<OriginsBody>, Error> {
    let client = service.owned_client(&principal, path_param(id)?).await?;
    Ok(Json(OriginsBody { allowed_origins: client.allowed_origins }))
}

/// Replaces the origins: exact `scheme://host[:port]` or `https://*.example.com`.
#[utoipa::path(put, path = "/client/{id}/origins", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = OriginsBody,
    responses((status = 200, body = OriginsBody), (status = 404, response = Problem), (status = 422, response = Problem)),
)]
pub async fn put_origins(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    id: IdPath,
    ApiJson(body): ApiJson<OriginsBody>,
) -> Result<Json<OriginsBody>, Error> {
    let id = path_param(id)?;
    service.owned_client(&principal, id).await?;
    let list = crate::domain::allowlist::parse_origins("allowed_origins", &body.allowed_origins)?;
    let client = service.update_client(&principal, id, ClientChange::AllowedOrigins(list), &meta).await?;
    Ok(Json(OriginsBody { allowed_origins: client.allowed_origins }))
}

/// The tenant's own rate limit, which the gateway applies instead of the route default.
#[utoipa::path(get, path = "/client/{id}/rate-limit", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = RateLimitView), (status = 404, response = Problem)),
)]
pub async fn get_rate_limit(
    State(service): State<AuthService>,
    principal: Principal,
    id: IdPath,
) -> Result<Json<RateLimitView>, Error> {
    let client = service.owned_client(&principal, path_param(id)?).await?;
    Ok(Json(RateLimitView::new(client.rate_limit)))
}

/// Sets (`{"requests": 1000, "per": "1m"}`) or clears (`{"requests": null}`) the limit.
#[utoipa::path(put, path = "/client/{id}/rate-limit", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RateLimitView,
    responses((status = 200, body = RateLimitView), (status = 404, response = Problem), (status = 422, response = Problem)),
)]
pub async fn put_rate_limit(
    State(service): State<AuthService>,
    meta: ClientMeta,
    principal: Principal,
    id: IdPath,
    ApiJson(body): ApiJson<RateLimitView>,
) -> Result<Json<RateLimitView>, Error> {
    let id = path_param(id)?;
    service.owned_client(&principal, id).await?;
    let limit = service.parse_rate_limit(body.requests, body.per.as_deref())?;
    let client = service.update_client(&principal, id, ClientChange::RateLimit(limit), &meta).await?;
    Ok(Json(RateLimitView::new(client.rate_limit)))
}
