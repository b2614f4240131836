//! HTTP mirrors of `Validate` and `ValidateApiKey` for forward-auth proxies (Caddy
//! `forward_auth`, nginx `auth_request`, Traefik ForwardAuth). They answer 200 with the signed
//! context headers of SPEC §6 (so the proxy can copy them upstream), or the problem+json of
//! the refusal. Callers prove themselves with a service token (`X-Service-Token`, or
//! `Authorization` where that does not carry the credential), or, with
//! `INTERNAL_LOOPBACK_ONLY=true`, by being an unforwarded loopback peer.

use std::net::SocketAddr;

use auth_contract::headers::{CONTEXT_HEADERS, sign_context};
use axum::{
    Json,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    error::Error,
    http::{
        REQUEST_ID_HEADER,
        error::Problem,
        extract::{bearer, credential, origin},
    },
    service::{AuthService, ClientMeta, Validated},
};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Whether the caller may use the internal routes; `service_token` is where its token is.
async fn authorize(
    service: &AuthService,
    peer: SocketAddr,
    headers: &HeaderMap,
    service_token: Option<&str>,
) -> Result<(), Error> {
    if let Some(token) = service_token {
        return service.authenticate_service(token).await.map(drop);
    }
    let forwarded = headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded");
    if service.config().internal_loopback_only && platform::net::is_loopback(peer.ip()) && !forwarded {
        return Ok(());
    }
    Err(Error::Forbidden("internal routes need a service token (X-Service-Token)"))
}

/// The original request's method and path, as forward-auth proxies pass them.
fn original(headers: &HeaderMap) -> (Method, String) {
    let method = header(headers, "x-forwarded-method")
        .or_else(|| header(headers, "x-original-method"))
        .and_then(|m| m.parse().ok())
        .unwrap_or(Method::GET);
    let path =
        header(headers, "x-forwarded-uri").or_else(|| header(headers, "x-original-uri")).unwrap_or("/").to_owned();
    (method, path)
}

fn signed(service: &AuthService, headers: &HeaderMap, validated: &Validated) -> Result<Response, Error> {
    let (method, path) = original(headers);
    let request_id = header(headers, REQUEST_ID_HEADER.as_str()).unwrap_or_default().to_owned();
    let timestamp = service.now().unix_timestamp();
    let context_headers =
        sign_context(service.context_key(), &validated.context, &method, &path, &request_id, timestamp)
            .map_err(|e| Error::internal(format!("context not signable: {e}")))?;
    let body = json!({
        "valid": true,
        "kind": validated.context.kind.as_str(),
        "subject": validated.context.subject,
        "scopes": validated.context.scopes.to_vec(),
        "cache_ttl_seconds": validated.cache_ttl,
    });
    let mut response = (StatusCode::OK, Json(body)).into_response();
    response.headers_mut().extend(context_headers);
    // Proxies copy a fixed list of headers (Caddy's `copy_headers`, nginx
    // `auth_request_set`); some turn a missing one into a literal placeholder. Every context
    // header is therefore present, empty when absent, which the signature treats as absent.
    for name in CONTEXT_HEADERS.iter() {
        if !response.headers().contains_key(name) {
            response.headers_mut().insert(name.clone(), HeaderValue::from_static(""));
        }
    }
    Ok(response)
}

/// Validates the credential in `Authorization` (access or SDK token, PAT, service token).
#[utoipa::path(get, path = "/internal/validate", tag = "internal",
    params(("X-Service-Token" = Option<String>, Header, description = "the caller's service token")),
    responses(
        (status = 200, description = "valid; the signed context headers are set"),
        (status = 401, response = Problem), (status = 403, response = Problem), (status = 503, response = Problem),
    ),
)]
pub async fn validate(
    State(service): State<AuthService>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    meta: ClientMeta,
    headers: HeaderMap,
) -> Result<Response, Error> {
    authorize(&service, peer, &headers, header(&headers, "x-service-token")).await?;
    let credential = credential(&headers)?;
    let origin = origin(&headers);
    let validated = service.validate(credential, Some(meta.ip), origin.as_deref()).await?;
    signed(&service, &headers, &validated)
}

/// The POST form of [`validate`], for proxies that forward the method.
#[utoipa::path(post, path = "/internal/validate", tag = "internal",
    responses((status = 200), (status = 401, response = Problem), (status = 403, response = Problem)),
)]
pub async fn validate_post(
    state: State<AuthService>,
    peer: ConnectInfo<SocketAddr>,
    meta: ClientMeta,
    headers: HeaderMap,
) -> Result<Response, Error> {
    validate(state, peer, meta, headers).await
}

/// Validates the API key in `X-API-Key` with the client's IP allowlist and origins.
#[utoipa::path(post, path = "/internal/validate-api-key", tag = "internal",
    params(("X-API-Key" = String, Header), ("X-Service-Token" = Option<String>, Header)),
    responses((status = 200), (status = 401, response = Problem), (status = 403, response = Problem)),
)]
pub async fn validate_api_key(
    State(service): State<AuthService>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    meta: ClientMeta,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let service_token = header(&headers, "x-service-token").or_else(|| bearer(&headers).ok());
    authorize(&service, peer, &headers, service_token).await?;
    let key = header(&headers, "x-api-key").ok_or(Error::TokenMissing)?;
    let origin = origin(&headers);
    let validated = service.validate_api_key(key, Some(meta.ip), origin.as_deref()).await?;
    signed(&service, &headers, &validated)
}
