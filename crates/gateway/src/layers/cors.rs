//! CORS. A preflight carries no credential, so it is answered here from the union of every
//! client's allowed origins (`ListAllowedOrigins`, refreshed on `auth:client.updated`) and
//! `CORS_ORIGIN`: an allowed origin gets the `Access-Control-Allow-*` headers, any other
//! (including `null`) gets 403 with none of them. An actual request's origin is checked
//! against its own client by the auth service during authentication; its response reflects
//! the origin only when that client allows it (an API key or SDK token authenticated with
//! origin validation on) or it is in `CORS_ORIGIN`, and allows credentials only for
//! `CORS_ORIGIN` (SPEC §6).

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, Method, StatusCode, header};

use auth_contract::{ErrorCode, Kind};

use crate::{error::GatewayError, layers::access_log::Principal, state::Gateway};

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
fn allow_headers(request: &Request) -> HeaderValue {
    request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| {
            v.to_str().is_ok_and(|s| {
                s.len() <= 1024 && s.split(',').all(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).is_ok())
            })
        })
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_ALLOW_HEADERS))
}

pub async fn layer(State(gateway): State<Gateway>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin.as_ref().and_then(|o| o.to_str().ok()).is_some_and(|o| gateway.cors.allows(o));
    if is_preflight(&request) {
        if !allowed {
            return GatewayError::Denied {
                code: ErrorCode::OriginNotAllowed,
                message: "this origin may not call the API".to_owned(),
            }
            .into_response();
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        if let Some(origin) = origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers(&request));
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        return response;
    }
    let mut response = next.run(request).await;
    let Some(origin) = origin.filter(|_| allowed) else {
        return response;
    };
    let platform = origin.to_str().is_ok_and(|o| gateway.cors.is_configured(o));
    // The auth service decided this origin for the caller's own client.
    let own_client = gateway.config.origin_validation_enabled
        && response
            .extensions()
            .get::<Principal>()
            .is_some_and(|Principal(context)| matches!(context.kind, Kind::ApiKey | Kind::Sdk));
    if platform || own_client {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if platform {
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
    }
    response.headers_mut().append(header::VARY, HeaderValue::from_static("Origin"));
    response
}
