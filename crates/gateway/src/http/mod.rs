//! The gateway's own routes: health, readiness and metrics; the auth service's public REST
//! surface passed through (`/v1/auth/*` except `/v1/auth/internal/*`, `/v1/client/*`,
//! `/v1/clients`); `POST /v1/sdk/session` over gRPC; the WebSocket upgrade to the socket
//! service. [`router`] serves them for the pipeline (`crate::pipeline`), which has already
//! normalised the request, put its [`ClientIp`] in its extensions and taken the IP limit.

use std::time::Duration;

use auth_contract::proto;
use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::{
    error::GatewayError,
    metrics::Snapshot,
    pipeline::{ClientIp, credential, forward, label, query_suffix},
    proxy::{WebSocketRequest, restore_websocket},
    state::Gateway,
};

/// Timeout, retries and body limit for the built-in routes to the auth and socket services.
const BUILT_IN_TIMEOUT: Duration = Duration::from_secs(30);
const BUILT_IN_RETRIES: u32 = 1;
const BUILT_IN_MAX_BODY: u64 = 1 << 20;

fn answer(result: Result<Response, GatewayError>, route: &'static str) -> Response {
    label(result.unwrap_or_else(IntoResponse::into_response), route)
}

fn client_ip(request: &Request) -> Option<ClientIp> {
    request.extensions().get::<ClientIp>().copied()
}

pub async fn health() -> Response {
    label(Json(json!({"status": "ok"})).into_response(), "health")
}

/// Ready when the auth service answers and, if configured, Redis does.
pub async fn ready(State(gateway): State<Gateway>) -> Response {
    let auth = gateway.auth.list_allowed_origins().await;
    let redis = match &gateway.deps.redis {
        Some(pool) => platform::redis::ping(pool).await.map_err(|e| e.to_string()),
        None => Ok(()),
    };
    let result = match (auth, redis) {
        (Ok(origins), Ok(())) => {
            gateway.cors.replace_clients(&origins);
            Ok(Json(json!({"status": "ready"})).into_response())
        }
        (Err(_), _) => Err(GatewayError::Unavailable { dependency: "auth service" }),
        (_, Err(_)) => Err(GatewayError::Unavailable { dependency: "redis" }),
    };
    answer(result, "ready")
}

pub async fn metrics(State(gateway): State<Gateway>) -> Response {
    let mut webhooks_pending = Vec::new();
    for source in gateway.config.routes.webhooks.keys() {
        // A store that cannot be read now leaves the gauge at its last value.
        if let Ok(pending) = gateway.webhooks.pending(source).await {
            webhooks_pending.push((source.clone(), pending));
        }
    }
    let now = platform::clock::Clock::now(gateway.deps.clock.as_ref()).unix_timestamp();
    let text = gateway.metrics.render(Snapshot {
        webhooks_pending,
        families: gateway.webhooks.metric_families(now),
        auth_lookups: gateway.auth.lookup_count(),
        auth_rpcs: gateway.auth.rpc_count(),
        auth_misses: gateway.auth.miss_count(),
        rate_limit_degraded: gateway.limiter.degraded(),
        rate_limit_fallbacks: gateway.limiter.fallbacks(),
        breakers: gateway.proxy.breaker_states(),
    });
    let mut response = text.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    label(response, "metrics")
}

/// The first path segment after `prefix`, percent-decoded and lower-cased, so
/// `/v1/auth/%49nternal/…` is recognised too.
fn first_segment(path: &str, prefix: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or_default().trim_start_matches('/');
    let segment = rest.split('/').next().unwrap_or_default();
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().to_ascii_lowercase()
}

/// Where the auth service serves a `/v1/auth/*` path.
fn auth_target(path: &str) -> String {
    format!("/api{path}")
}

/// Where the auth service serves a `/v1/client/*` or `/v1/clients` path.
fn clients_target(path: &str) -> String {
    format!("/api/v1/auth{}", path.strip_prefix("/v1").unwrap_or(path))
}

/// Where the gateway exposes a path of the auth service's HTTP surface (the inverse of
/// [`auth`] and [`clients`]; `cargo xtask openapi` maps the auth service's document with it):
/// `/api/v1/auth/client/*` and `/api/v1/auth/clients` at `/v1/client/*` and `/v1/clients`,
/// the rest of `/api/v1/auth/*` at `/v1/auth/*` except the internal routes; nothing else
/// (the gateway answers its own health, readiness and metrics).
pub fn exposed_path(auth_path: &str) -> Option<String> {
    let rest = auth_path.strip_prefix("/api/v1/auth").filter(|rest| rest.starts_with('/'))?;
    let public = format!("/v1/auth{rest}");
    if first_segment(&public, "/v1/auth") == "internal" {
        None
    } else if rest == "/clients" || rest.starts_with("/client/") {
        Some(format!("/v1{rest}"))
    } else {
        Some(public)
    }
}

/// The gateway's OpenAPI document, generated by `cargo xtask openapi` (which a test keeps
/// fresh) and served at `/openapi.json`.
pub const OPENAPI_DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn openapi() -> Response {
    let mut response = OPENAPI_DOCUMENT.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    label(response, "openapi")
}

/// `/v1/auth/*` → `{AUTH_HTTP_URL}/api/v1/auth/*`, except the internal routes.
pub async fn auth(State(gateway): State<Gateway>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if first_segment(&path, "/v1/auth") == "internal" {
        return answer(Err(GatewayError::NotFound), "auth");
    }
    let target = format!("{}{}", auth_target(&path), query_suffix(&request));
    let limits = (BUILT_IN_TIMEOUT, BUILT_IN_RETRIES, BUILT_IN_MAX_BODY);
    let ip = client_ip(&request);
    answer(forward(&gateway, request, &gateway.config.auth_http_url, &target, limits, ip, None).await, "auth")
}

/// `/v1/client/*` → `/api/v1/auth/client/*` and `/v1/clients` → `/api/v1/auth/clients`.
pub async fn clients(State(gateway): State<Gateway>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let target = format!("{}{}", clients_target(&path), query_suffix(&request));
    let limits = (BUILT_IN_TIMEOUT, BUILT_IN_RETRIES, BUILT_IN_MAX_BODY);
    let ip = client_ip(&request);
    answer(forward(&gateway, request, &gateway.config.auth_http_url, &target, limits, ip, None).await, "clients")
}

/// `GET /v1/socket` (a WebSocket upgrade) → the socket service's `/ws`, which checks the
/// credential itself before upgrading.
pub async fn socket(State(gateway): State<Gateway>, mut request: Request) -> Response {
    if request.extensions().get::<WebSocketRequest>().is_some() {
        restore_websocket(request.headers_mut());
    }
    let target = format!("/ws{}", query_suffix(&request));
    let limits = (BUILT_IN_TIMEOUT, 0, 0);
    let ip = client_ip(&request);
    answer(forward(&gateway, request, &gateway.config.socket_service_url, &target, limits, ip, None).await, "socket")
}

#[derive(Debug, Deserialize)]
struct SdkSessionBody {
    external_user_id: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

async fn create_sdk_session(gateway: &Gateway, request: Request) -> Result<Response, GatewayError> {
    let ip = client_ip(&request);
    let (parts, body) = request.into_parts();
    let key = credential(&parts.headers)?.secret().to_owned();
    if !platform::media::is_json(&parts.headers) {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let bytes: Bytes = axum::body::to_bytes(body, BUILT_IN_MAX_BODY as usize)
        .await
        .map_err(|_| GatewayError::BodyTooLarge { limit: BUILT_IN_MAX_BODY })?;
    let body: SdkSessionBody =
        platform::media::parse_json(&bytes).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let origin = if gateway.config.origin_validation_enabled {
        parts.headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null").to_owned())
    } else {
        None
    };
    let session = gateway
        .auth
        .create_sdk_session(proto::CreateSdkSessionRequest {
            api_key: key,
            external_user_id: body.external_user_id,
            scopes: body.scopes.unwrap_or_default(),
            ip: ip.filter(|_| gateway.config.ip_allowlist_enabled).map(|ip| ip.0.to_string()).unwrap_or_default(),
            origin: origin.unwrap_or_default(),
        })
        .await?;
    let body = json!({
        "access_token": session.access_token,
        "refresh_token": session.refresh_token,
        "token_type": "Bearer",
        "expires_in": session.expires_in,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST /v1/sdk/session`: `CreateSdkSession` with the API key, answering like the auth
/// service's `/sdk/session`.
pub async fn sdk_session(State(gateway): State<Gateway>, request: Request) -> Response {
    answer(create_sdk_session(&gateway, request).await, "sdk_session")
}

/// The built-in routes (webhooks included); any other path under a built-in prefix is 404.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route(platform::media::OPENAPI_PATH, get(openapi))
        .route("/v1/auth", any(auth))
        .route("/v1/auth/{*rest}", any(auth))
        .route("/v1/client/{*rest}", any(clients))
        .route("/v1/clients", any(clients))
        .route("/v1/sdk/session", post(sdk_session))
        .route("/v1/socket", get(socket))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway.clone())
        .merge(crate::webhooks::router(gateway.webhooks.clone()))
        .fallback(|| async { GatewayError::NotFound })
}

/// Unknown methods on built-in routes answer in the problem shape too (the router adds
/// `Allow`).
pub async fn method_not_allowed() -> Response {
    GatewayError::MethodNotAllowed { allow: None }.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_routes_are_recognised_however_they_are_spelled() {
        for path in ["/v1/auth/internal", "/v1/auth/internal/validate", "/v1/auth/INTERNAL/x", "/v1/auth/%69nternal/x"]
        {
            assert_eq!(first_segment(path, "/v1/auth"), "internal", "{path}");
        }
        assert_eq!(first_segment("/v1/auth/login", "/v1/auth"), "login");
        assert_eq!(first_segment("/v1/auth/internals", "/v1/auth"), "internals");
    }

    #[test]
    fn an_exposed_path_is_forwarded_to_the_auth_service_path_it_came_from() {
        for (auth_path, public) in [
            ("/api/v1/auth/login", Some("/v1/auth/login")),
            ("/api/v1/auth/sessions/{id}", Some("/v1/auth/sessions/{id}")),
            ("/api/v1/auth/sdk/session", Some("/v1/auth/sdk/session")),
            ("/api/v1/auth/clients", Some("/v1/clients")),
            ("/api/v1/auth/client/{id}/keys", Some("/v1/client/{id}/keys")),
            ("/api/v1/auth/internal/validate", None),
            ("/api/v1/authx", None),
            ("/health", None),
            ("/metrics", None),
        ] {
            let exposed = exposed_path(auth_path);
            assert_eq!(exposed.as_deref(), public, "{auth_path}");
            if let Some(public) = exposed {
                let target =
                    if public.starts_with("/v1/auth") { auth_target(&public) } else { clients_target(&public) };
                assert_eq!(target, auth_path);
            }
        }
    }

    #[test]
    fn the_embedded_document_is_json() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI_DOCUMENT).unwrap();
        assert!(document["paths"]["/openapi.json"].is_object());
    }
}
