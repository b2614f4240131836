//! Route matching for proxied requests: the longest configured prefix wins (whole segments
//! only), and `POST /v1/socket/ticket` is the built-in route to the socket service. The match
//! goes into the request's extensions for authentication, rate limits and the proxy; a path
//! no route claims answers 404.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{error::GatewayError, routes::RoutePolicy, state::Gateway};

pub const SOCKET_TICKET_PATH: &str = "/v1/socket/ticket";
/// Where the socket service mints tickets.
pub const SOCKET_TICKET_UPSTREAM_PATH: &str = "/ticket";

/// The route a request matched, and the path it is sent upstream with when that differs
/// from its own.
#[derive(Debug, Clone)]
pub struct MatchedRoute {
    pub policy: Arc<RoutePolicy>,
    pub upstream_path: Option<&'static str>,
}

pub fn find(gateway: &Gateway, path: &str) -> Option<MatchedRoute> {
    if path == SOCKET_TICKET_PATH {
        return Some(MatchedRoute {
            policy: gateway.ticket_route.clone(),
            upstream_path: Some(SOCKET_TICKET_UPSTREAM_PATH),
        });
    }
    gateway
        .config
        .routes
        .routes
        .match_route(path)
        .map(|policy| MatchedRoute { policy: policy.clone(), upstream_path: None })
}

pub async fn layer(State(gateway): State<Gateway>, mut request: Request, next: Next) -> Response {
    let Some(matched) = find(&gateway, request.uri().path()) else {
        return GatewayError::NotFound.into_response();
    };
    if matched.upstream_path.is_some() && request.method() != http::Method::POST {
        return GatewayError::MethodNotAllowed.into_response();
    }
    request.extensions_mut().insert(matched);
    next.run(request).await
}
