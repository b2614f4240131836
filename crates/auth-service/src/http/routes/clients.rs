//! Clients (tenants): registration, listing, API keys (create, list, rotate, revoke), IP
//! allowlist, origins and the tenant's own rate limit. Owner only; anyone else gets 404.

use axum::{
    Json,
    extract::{Path, Request, State, rejection::PathRejection},
    http::StatusCode,
};

use crate::{
    error::Error,
    http::{
        dto::{
            ClientView, ClientsResponse, CreateKeyRequest, IpAllowlistBody, KeyView, KeysResponse, NewKeyView,
            OriginsBody, PreviousKeyView, RateLimitView, RegisterClientRequest, RegisteredClientResponse,
            RotateRequest, RotatedResponse, rfc3339,
        },
        error::Problem,
        extract::{ApiJson, optional_json, path_pair, path_param},
    },
    service::{AuthService, ClientMeta, Principal},
    store::ClientChange,
};

type IdPath = Result<Path<String>, PathRejection>;
type PairPath = Result<Path<(String, String)>, PathRejection>;

/// Registers a client; its first API key is in this response only.
#[utoipa::path(post, path = "/client/register", tag = "clients", security(("bearer" = [])), request_body = RegisterClientRequest, responses(
    (status = 201, body = RegisteredClientResponse), (status = 401, body = Problem), (status = 422, body = Problem),
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
    (status = 200, body = ClientsResponse), (status = 401, body = Problem),
))]
pub async fn list(State(service): State<AuthService>, principal: Principal) -> Result<Json<ClientsResponse>, Error> {
    let clients = service.clients(&principal).await?.iter().map(ClientView::from).collect();
    Ok(Json(ClientsResponse { clients }))
}

/// One of the caller's clients.
#[utoipa::path(get, path = "/client/{id}", tag = "clients", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ClientView), (status = 401, body = Problem), (status = 404, body = Problem)),
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
    responses((status = 201, body = NewKeyView), (status = 404, body = Problem), (status = 422, body = Problem)),
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
    responses((status = 200, body = KeysResponse), (status = 404, body = Problem)),
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
    responses((status = 201, body = RotatedResponse), (status = 404, body = Problem), (status = 422, body = Problem)),
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
    responses((status = 204), (status = 404, body = Problem)),
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
    params(("id" = String, Path)), responses((status = 200, body = IpAllowlistBody), (status = 404, body = Problem)),
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
    responses((status = 200, body = IpAllowlistBody), (status = 404, body = Problem), (status = 422, body = Problem)),
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
    params(("id" = String, Path)), responses((status = 200, body = OriginsBody), (status = 404, body = Problem)),
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
    responses((status = 200, body = OriginsBody), (status = 404, body = Problem), (status = 422, body = Problem)),
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
    params(("id" = String, Path)), responses((status = 200, body = RateLimitView), (status = 404, body = Problem)),
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
    responses((status = 200, body = RateLimitView), (status = 404, body = Problem), (status = 422, body = Problem)),
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
