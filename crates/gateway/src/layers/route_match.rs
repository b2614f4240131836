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

/// The route of a (normalised) path; a path that only its case keeps from a stricter route
/// is refused (SPEC §6).
pub fn find(gateway: &Gateway, path: &str) -> Result<MatchedRoute, GatewayError> {
    if path == SOCKET_TICKET_PATH {
        return Ok(MatchedRoute {
            policy: gateway.ticket_route.clone(),
            upstream_path: Some(SOCKET_TICKET_UPSTREAM_PATH),
        });
    }
    let table = &gateway.config.routes.routes;
    if let Some(stricter) = table.case_conflict(path) {
        tracing::debug!(path, stricter, "path refused: its lower-cased form is under a longer route");
        return Err(GatewayError::MalformedPath("the path differs from a route's prefix only in letter case"));
    }
    table
        .match_route(path)
        .map(|policy| MatchedRoute { policy: policy.clone(), upstream_path: None })
        .ok_or(GatewayError::NotFound)
}

pub async fn layer(State(gateway): State<Gateway>, mut request: Request, next: Next) -> Response {
    let matched = match find(&gateway, request.uri().path()) {
        Ok(matched) => matched,
        Err(err) => return err.into_response(),
    };
    if matched.upstream_path.is_some() && request.method() != http::Method::POST {
        return GatewayError::MethodNotAllowed.into_response();
    }
    request.extensions_mut().insert(matched);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::{Extension, Router, body::Body, routing::any};
    use tower::ServiceExt;

    use super::*;

    async fn matched(app: &Router, method: http::Method, path: &str) -> (u16, String) {
        let request = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_longest_prefix_wins_and_the_ticket_route_is_built_in() {
        let gateway = crate::app::test_gateway(
            "[[routes]]\nprefix = \"/v1/user\"\nupstream = \"http://127.0.0.1:9001\"\n\n\
             [[routes]]\nprefix = \"/v1/user/orders\"\nupstream = \"http://127.0.0.1:9002\"\n",
        )
        .await;
        let app = Router::new()
            .fallback(any(|Extension(m): Extension<MatchedRoute>| async move {
                format!("{} {}", m.policy.prefix, m.upstream_path.unwrap_or("-"))
            }))
            .layer(axum::middleware::from_fn_with_state(gateway, layer));
        let get = http::Method::GET;
        assert_eq!(matched(&app, get.clone(), "/v1/user/orders/7").await, (200, "/v1/user/orders -".into()));
        assert_eq!(matched(&app, get.clone(), "/v1/user/ordersX").await, (200, "/v1/user -".into()));
        assert_eq!(matched(&app, get.clone(), "/v1/user").await, (200, "/v1/user -".into()));
        assert_eq!(matched(&app, get.clone(), "/v1/other").await.0, 404);
        let ticket = matched(&app, http::Method::POST, SOCKET_TICKET_PATH).await;
        assert_eq!(ticket, (200, format!("{SOCKET_TICKET_PATH} {SOCKET_TICKET_UPSTREAM_PATH}")));
        assert_eq!(matched(&app, get, SOCKET_TICKET_PATH).await.0, 405);
    }
}
