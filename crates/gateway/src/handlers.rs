//! The gateway's own routes: health, readiness and metrics; the auth service's public REST
//! surface passed through (`/v1/auth/*` except `/v1/auth/internal/*`, `/v1/client/*`,
//! `/v1/clients`); `POST /v1/sdk/session` over gRPC; the WebSocket upgrade to the socket
//! service; and the handler behind every configured route.

use std::{sync::Arc, time::Duration};

use auth_contract::{AuthContext, headers::sign_context, proto};
use axum::{
    Extension, Json,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::{
    client_ip::ClientIp,
    domain::Upstream,
    error::GatewayError,
    layers::{
        MatchedRoute, RequestId,
        access_log::{Principal, RouteLabel},
        authn,
    },
    metrics::Snapshot,
    proxy::{Target, WebSocketRequest, restore_websocket, set_header},
    state::Gateway,
};

/// Timeout, retries and body limit for the built-in routes to the auth and socket services.
const BUILT_IN_TIMEOUT: Duration = Duration::from_secs(30);
const BUILT_IN_RETRIES: u32 = 1;
const BUILT_IN_MAX_BODY: u64 = 1 << 20;

fn labelled(mut response: Response, label: &'static str) -> Response {
    response.extensions_mut().insert(RouteLabel(label));
    response
}

fn answer(result: Result<Response, GatewayError>, label: &'static str) -> Response {
    labelled(result.unwrap_or_else(IntoResponse::into_response), label)
}

pub async fn health() -> Response {
    labelled(Json(json!({"status": "ok"})).into_response(), "health")
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
    let text = gateway.metrics.render(Snapshot {
        webhooks_pending,
        auth_lookups: gateway.auth.lookup_count(),
        auth_rpcs: gateway.auth.rpc_count(),
        rate_limit_degraded: gateway.limiter.degraded(),
        rate_limit_fallbacks: gateway.limiter.fallbacks(),
        breakers: gateway.proxy.breaker_states(),
    });
    let mut response = text.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    labelled(response, "metrics")
}

/// Forwards `request` to `upstream` at `path_and_query`, with forwarding headers and, when the
/// request was authenticated, the signed context.
async fn forward(
    gateway: &Gateway,
    mut request: Request,
    upstream: &Upstream,
    path_and_query: &str,
    limits: (Duration, u32, u64),
    context: Option<&AuthContext>,
) -> Result<Response, GatewayError> {
    let ip = request.extensions().get::<ClientIp>().copied();
    let request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let host = request.headers().get(header::HOST).cloned();
    let headers = request.headers_mut();
    if let Some(ip) = ip {
        set_header(headers, http::HeaderName::from_static("x-forwarded-for"), &ip.0.to_string());
    }
    headers.insert(http::HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert(http::HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Some(context) = context {
        // The upstream sees its base path in front of ours, and verifies what it sees.
        let signed_path = format!("{}{path_and_query}", upstream.base_path());
        let signed = sign_context(
            &gateway.context_key,
            context,
            request.method(),
            &signed_path,
            &request_id,
            gateway.deps.clock.now().unix_timestamp(),
        )
        .map_err(|e| GatewayError::Internal(format!("cannot sign context: {e}")))?;
        request.headers_mut().extend(signed);
    }
    let (timeout, retries, max_body) = limits;
    gateway.proxy.forward(request, Target { upstream, path_and_query, timeout, retries, max_body }).await
}

fn query_suffix(request: &Request) -> String {
    request.uri().query().map(|q| format!("?{q}")).unwrap_or_default()
}

/// The first path segment after `prefix`, percent-decoded and lower-cased, so
/// `/v1/auth/%49nternal/…` is recognised too.
fn first_segment(path: &str, prefix: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or_default().trim_start_matches('/');
    let segment = rest.split('/').next().unwrap_or_default();
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().to_ascii_lowercase()
}

/// `/v1/auth/*` → `{AUTH_HTTP_URL}/api/v1/auth/*`, except the internal routes.
pub async fn auth(State(gateway): State<Gateway>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if first_segment(&path, "/v1/auth") == "internal" {
        return answer(Err(GatewayError::NotFound), "auth");
    }
    let target = format!("/api{path}{}", query_suffix(&request));
    let limits = (BUILT_IN_TIMEOUT, BUILT_IN_RETRIES, BUILT_IN_MAX_BODY);
    answer(forward(&gateway, request, &gateway.config.auth_http_url, &target, limits, None).await, "auth")
}

/// `/v1/client/*` → `/api/v1/auth/client/*` and `/v1/clients` → `/api/v1/auth/clients`.
pub async fn clients(State(gateway): State<Gateway>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let rest = path.strip_prefix("/v1").unwrap_or(&path);
    let target = format!("/api/v1/auth{rest}{}", query_suffix(&request));
    let limits = (BUILT_IN_TIMEOUT, BUILT_IN_RETRIES, BUILT_IN_MAX_BODY);
    answer(forward(&gateway, request, &gateway.config.auth_http_url, &target, limits, None).await, "clients")
}

/// `GET /v1/socket` (a WebSocket upgrade) → the socket service's `/ws`, which checks the
/// credential itself before upgrading.
pub async fn socket(State(gateway): State<Gateway>, mut request: Request) -> Response {
    if request.extensions().get::<WebSocketRequest>().is_some() {
        restore_websocket(request.headers_mut());
    }
    let target = format!("/ws{}", query_suffix(&request));
    let limits = (BUILT_IN_TIMEOUT, 0, 0);
    answer(forward(&gateway, request, &gateway.config.socket_service_url, &target, limits, None).await, "socket")
}

#[derive(Debug, Deserialize)]
struct SdkSessionBody {
    external_user_id: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

async fn create_sdk_session(gateway: &Gateway, request: Request) -> Result<Response, GatewayError> {
    let ip = request.extensions().get::<ClientIp>().copied();
    let (parts, body) = request.into_parts();
    let key = authn::credential(&parts.headers)?.secret().to_owned();
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

/// Every configured route (and `/v1/socket/ticket`): the matched upstream, the verified
/// context signed into the request.
pub async fn proxied(
    State(gateway): State<Gateway>,
    Extension(matched): Extension<MatchedRoute>,
    context: Option<Extension<Arc<AuthContext>>>,
    mut request: Request,
) -> Response {
    let policy = &matched.policy;
    // Credentials stop here unless the route opts in; the built-in ticket route keeps them.
    if matched.upstream_path.is_none() && !policy.forward_credentials {
        strip_credentials(request.headers_mut());
    }
    if policy.websocket && request.extensions().get::<WebSocketRequest>().is_some() {
        restore_websocket(request.headers_mut());
    }
    let path_and_query = match matched.upstream_path {
        Some(path) => format!("{path}{}", query_suffix(&request)),
        None => request.uri().path_and_query().map_or_else(|| request.uri().path().to_owned(), |pq| pq.to_string()),
    };
    let context = context.map(|Extension(c)| c);
    let limits = (policy.timeout, policy.retries, policy.max_body);
    let result = forward(&gateway, request, &policy.upstream, &path_and_query, limits, context.as_deref()).await;
    let mut response = answer(result, "route");
    if let Some(context) = context {
        response.extensions_mut().insert(Principal(context));
    }
    response
}

/// Removes `Authorization`, `X-API-Key` and the `pc_*` cookies the auth service sets (other
/// cookies stay): never a configured upstream's business.
fn strip_credentials(headers: &mut http::HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    headers.remove(auth_contract::credential::API_KEY_HEADER);
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !pair.starts_with(auth_contract::credential::COOKIE_PREFIX))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

/// Unknown methods on built-in routes answer in the problem shape too.
pub async fn method_not_allowed() -> Response {
    GatewayError::MethodNotAllowed.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped_and_other_cookies_kept() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.append("x-api-key", HeaderValue::from_static("pck_a"));
        headers.append("x-api-key", HeaderValue::from_static("pck_b"));
        headers.append(header::COOKIE, HeaderValue::from_static("pc_refresh=r; theme=dark"));
        headers.append(header::COOKIE, HeaderValue::from_static("lang=en;pc_x=1"));
        strip_credentials(&mut headers);
        assert!(headers.get(header::AUTHORIZATION).is_none() && headers.get("x-api-key").is_none());
        assert_eq!(headers.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["theme=dark; lang=en"]);
        let mut only = http::HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("pc_refresh=r"));
        strip_credentials(&mut only);
        assert!(only.get(header::COOKIE).is_none());
    }

    #[test]
    fn internal_routes_are_recognised_however_they_are_spelled() {
        for path in ["/v1/auth/internal", "/v1/auth/internal/validate", "/v1/auth/INTERNAL/x", "/v1/auth/%69nternal/x"]
        {
            assert_eq!(first_segment(path, "/v1/auth"), "internal", "{path}");
        }
        assert_eq!(first_segment("/v1/auth/login", "/v1/auth"), "login");
        assert_eq!(first_segment("/v1/auth/internals", "/v1/auth"), "internals");
    }
}
