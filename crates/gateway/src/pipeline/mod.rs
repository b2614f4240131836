//! One request through the edge, as plain functions called in order from [`handle`] (SPEC
//! §6): the client's hop-by-hop headers removed → request id and trace context (the
//! request's span, while spans are exported) → the path
//! normalised (client-supplied context headers dropped) → client IP → CORS preflight → then
//! either a built-in route (`crate::http`) or the proxied path: IP limit → route →
//! authentication (with the auth-failure limit, allowlist and origin decided by the auth
//! service) → the route's kinds, scopes and roles → tenant limit → credentials stripped →
//! context signed → forwarded; and on the way out CORS and security headers and the access
//! log. Nothing here is a tower layer: each stage takes what the earlier ones produced as
//! arguments, so the whole path is one future.

mod access_log;
mod authn;
mod client_ip;
mod cors;
mod forward;
mod headers;
mod path;
mod request_id;

use std::sync::Arc;

use auth_contract::AuthContext;
use axum::{
    Router,
    extract::Request,
    response::{IntoResponse, Response},
};
use tower::ServiceExt as _;
use tracing::Instrument as _;

pub use self::{
    access_log::label,
    authn::credential,
    client_ip::ClientIp,
    forward::{forward, query_suffix},
};
use crate::{
    error::{GatewayError, REQUEST_ID},
    proxy::WebSocketRequest,
    ratelimit::{self, Decision},
    routing::{self, MatchedRoute},
    state::Gateway,
};

/// Answers one request. `built_in` serves the gateway's own routes (`crate::http`).
pub async fn handle(gateway: &Gateway, built_in: &Router, mut request: Request) -> Response {
    let mut log = access_log::Entry::begin(&request);
    let websocket = headers::strip_incoming(&mut request);
    let peer = client_ip::peer(&request).ip();
    let (id, span) = request_id::assign(request.headers_mut(), || gateway.config.trusted_proxies.contains(peer));
    let routed = REQUEST_ID.scope(id.clone(), routed(gateway, built_in, request, websocket, &mut log));
    // Without a span (spans not exported) the future is not moved into an instrumented one.
    let mut response = if span.is_none() { routed.await } else { routed.instrument(span.clone()).await };
    let status = response.status();
    request_id::answer(response.headers_mut(), &id, &span, status);
    headers::secure(response.headers_mut());
    log.finish(gateway, &response, &id);
    response
}

async fn routed(
    gateway: &Gateway,
    built_in: &Router,
    mut request: Request,
    websocket: Option<WebSocketRequest>,
    log: &mut access_log::Entry,
) -> Response {
    if let Err(err) = path::normalise_request(&mut request) {
        return err.into_response();
    }
    let ip = client_ip::resolve(&gateway.config.trusted_proxies, &request);
    log.ip = Some(ip);
    if cors::is_preflight(&request) {
        return cors::preflight(gateway, request.headers());
    }
    let origin = cors::origin(request.headers());
    let mut response = if routing::is_built_in(request.uri().path()) {
        built_in_route(gateway, built_in, request, ip, websocket).await
    } else {
        proxied(gateway, request, ip, websocket, log).await
    };
    cors::decorate(gateway, origin, log.principal.as_deref(), &mut response);
    response
}

/// The gateway's own routes, behind the per-IP limit except for health, readiness, metrics,
/// the OpenAPI document and webhooks (whose sources have their own limits).
async fn built_in_route(
    gateway: &Gateway,
    built_in: &Router,
    mut request: Request,
    ip: ClientIp,
    websocket: Option<WebSocketRequest>,
) -> Response {
    let path = request.uri().path();
    let unlimited = ["/health", "/ready", "/metrics", platform::media::OPENAPI_PATH].contains(&path)
        || routing::is_under(path, "/v1/webhooks");
    let decision = if unlimited {
        None
    } else {
        match ratelimit::ip_limit(gateway, ip).await {
            Ok(decision) => decision,
            Err(err) => return err.into_response(),
        }
    };
    let extensions = request.extensions_mut();
    extensions.insert(ip);
    if let Some(websocket) = websocket {
        extensions.insert(websocket);
    }
    let mut response = match built_in.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if let Some(decision) = decision {
        ratelimit::set_headers(response.headers_mut(), &decision);
    }
    response
}

/// A configured route (or the ticket route): every stage of the proxied path, in order. The
/// log learns the route and who was authenticated once the request is forwarded.
async fn proxied(
    gateway: &Gateway,
    mut request: Request,
    ip: ClientIp,
    websocket: Option<WebSocketRequest>,
    log: &mut access_log::Entry,
) -> Response {
    let mut context = None;
    let mut tightest = None;
    let result = proxied_stages(gateway, &mut request, ip, &mut context, &mut tightest).await;
    let mut response = match result {
        Ok(matched) => {
            let result = forward::to_route(gateway, request, &matched, context.as_ref(), ip, websocket).await;
            log.route = Some(crate::metrics::PROXIED_ROUTE);
            log.principal = context;
            result.unwrap_or_else(IntoResponse::into_response)
        }
        Err(err) => err.into_response(),
    };
    if let Some(decision) = tightest {
        ratelimit::set_headers(response.headers_mut(), &decision);
    }
    response
}

/// The checks before forwarding: the IP limit, the route, authentication and authorisation,
/// the tenant limit. A refusal carries the limit headers of the bucket that refused.
async fn proxied_stages(
    gateway: &Gateway,
    request: &mut Request,
    ip: ClientIp,
    context: &mut Option<Arc<AuthContext>>,
    tightest: &mut Option<Decision>,
) -> Result<MatchedRoute, GatewayError> {
    // Limits come before work: the per-IP limit is counted before any authentication.
    *tightest = ratelimit::ip_limit(gateway, ip).await?;
    let matched = gateway.routes.find(request.uri().path())?;
    if matched.upstream_path.is_some() && request.method() != http::Method::POST {
        return Err(GatewayError::MethodNotAllowed { allow: Some("POST") });
    }
    if !matched.policy.auth.is_public() {
        let verified = authn::validate(gateway, request.headers(), ip).await?;
        authn::authorize(&matched.policy, &verified)?;
        *context = Some(verified);
    }
    ratelimit::route_limit(gateway, &matched, context.as_deref(), ip, tightest).await?;
    Ok(matched)
}

#[cfg(test)]
mod tests {
    use http::Request;

    /// Every request's future is moved into a box when it starts; the contract client's call
    /// (tonic's future, about 40 KB) and the counter stores' are boxed on their own slower
    /// paths so a cached credential's request does not copy them each time.
    #[tokio::test]
    async fn the_request_future_stays_small() {
        let gateway = crate::app::test_gateway("").await;
        let built_in = crate::http::router(gateway.clone());
        let request = Request::builder().uri("/x").body(axum::body::Body::empty()).unwrap();
        let size = std::mem::size_of_val(&super::handle(&gateway, &built_in, request));
        let limit = if cfg!(debug_assertions) { 24 * 1024 } else { 8 * 1024 };
        assert!(size <= limit, "the request future is {size} bytes (at most {limit})");
    }

    /// RFC 9110 §15.5.6: a 405 names the methods the target does allow.
    #[tokio::test]
    async fn the_ticket_route_refuses_other_methods_naming_post() {
        use tower::ServiceExt as _;
        let app = crate::app::router(crate::app::test_gateway("").await);
        for method in ["GET", "TRACE", "DELETE"] {
            let request =
                Request::builder().method(method).uri("/v1/socket/ticket").body(axum::body::Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 405, "{method}");
            assert_eq!(response.headers().get(http::header::ALLOW).unwrap(), "POST", "{method}");
        }
    }
}
