//! CORS. A preflight carries no credential, so it is answered here from the union of every
//! client's allowed origins (`ListAllowedOrigins`, refreshed on `auth:client.updated`) and
//! `CORS_ORIGIN`: an allowed origin gets the `Access-Control-Allow-*` headers, any other
//! (including `null`) gets 403 with none of them. An actual request's origin is checked
//! against its own client by the auth service during authentication; its response reflects
//! the origin only when that client allows it (an API key or SDK token authenticated with
//! origin validation on) or it is in `CORS_ORIGIN`, and allows credentials only for
//! `CORS_ORIGIN` (SPEC §6).

use auth_contract::{AuthContext, ErrorCode, Kind};
use axum::{
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::{error::GatewayError, state::Gateway};

const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
const DEFAULT_ALLOW_HEADERS: &str = "authorization, content-type, x-api-key, x-request-id, traceparent";
const MAX_AGE: &str = "600";

pub fn is_preflight(request: &Request) -> bool {
    request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Requested headers are echoed when they are plain header names; anything else falls back
/// to the default list.
fn allow_headers(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| {
            v.to_str().is_ok_and(|s| {
                s.len() <= 1024 && s.split(',').all(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).is_ok())
            })
        })
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_ALLOW_HEADERS))
}

/// The request's `Origin` when some client (or `CORS_ORIGIN`) allows it.
pub fn allowed_origin(gateway: &Gateway, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let allowed = origin.to_str().is_ok_and(|o| gateway.cors.allows(o));
    allowed.then(|| origin.clone())
}

/// The request's `Origin`, for [`decorate`].
pub fn origin(headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(header::ORIGIN).cloned()
}

/// The answer to a preflight: 204 with the `Access-Control-Allow-*` headers for an allowed
/// origin, 403 `origin_not_allowed` with none of them otherwise.
pub fn preflight(gateway: &Gateway, headers: &HeaderMap) -> Response {
    let Some(origin) = allowed_origin(gateway, headers) else {
        return GatewayError::Denied {
            code: ErrorCode::OriginNotAllowed,
            message: "this origin may not call the API".to_owned(),
        }
        .into_response();
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers(headers));
    out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
    out.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

/// An actual answer reflects the request's `origin` when it is in `CORS_ORIGIN` (with
/// credentials) or the auth service accepted it for the caller's own client (`principal`, an
/// API key or SDK token authenticated with origin validation on). The latter needs no wait
/// for the preflight list to learn of a new client's origins: the auth service decided it.
pub fn decorate(
    gateway: &Gateway,
    origin: Option<HeaderValue>,
    principal: Option<&AuthContext>,
    response: &mut Response,
) {
    let Some(origin) = origin else {
        return;
    };
    let platform = origin.to_str().is_ok_and(|o| gateway.cors.is_configured(o));
    let own_client = gateway.config.origin_validation_enabled
        && principal.is_some_and(|context| matches!(context.kind, Kind::ApiKey | Kind::Sdk));
    let listed = platform || own_client || origin.to_str().is_ok_and(|o| gateway.cors.allows(o));
    let headers = response.headers_mut();
    if platform || own_client {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if platform {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
    }
    if listed {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}
