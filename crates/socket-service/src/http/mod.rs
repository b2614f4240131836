//! The socket service's HTTP surface: the WebSocket handshake (`GET /ws`), ticket minting
//! (`POST /ticket`), the internal publish endpoint, and health, readiness and metrics.

mod error;
mod internal;
mod ops;
mod ticket;
mod ws;

use std::net::{IpAddr, SocketAddr};

use axum::{
    Router,
    extract::{ConnectInfo, FromRequestParts, MatchedPath, Request},
    http::{HeaderMap, HeaderValue, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tracing::Instrument;

pub use error::{ApiError, Problem};

use crate::service::SocketService;

pub const X_REQUEST_ID: &str = "x-request-id";

/// The request's id: the caller's `X-Request-Id` when SPEC §6 keeps it, otherwise a new one.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned().unwrap_or_else(|| Self(uuid::Uuid::new_v4().to_string())))
    }
}

/// Assigns or keeps `X-Request-Id`, echoes it on the response and opens a span with it (the
/// route's template, never the path a client wrote), which continues a trusted proxy's trace
/// while spans are exported.
async fn request_id(
    axum::extract::State(service): axum::extract::State<SocketService>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = platform::request_id::keep_or_new(request.headers());
    request.extensions_mut().insert(RequestId(id.clone()));
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        http.route = %route,
        otel.kind = "server",
        portcullis.component = "sockets",
    );
    platform::otel::continue_request(&span, &request, &service.config().trusted_proxies);
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

/// The client's address: the TCP peer, or `X-Forwarded-For` when the peer is a trusted proxy.
pub(crate) fn client_ip(service: &SocketService, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    service.config().trusted_proxies.client_ip_from_headers(peer.ip(), headers)
}

/// The peer address, when the server was started with connect info (tests may call the
/// router without it).
pub(crate) struct Peer(pub SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)), |info| info.0);
        Ok(Self(peer))
    }
}

async fn not_found(RequestId(id): RequestId) -> Response {
    ApiError::Denied { code: auth_contract::ErrorCode::NotFound, message: "no such route".to_owned() }
        .at(&id)
        .into_response()
}

pub fn router(service: SocketService) -> Router {
    Router::new()
        .route("/ws", get(ws::connect))
        .route("/ticket", post(ticket::mint))
        // The same handler under the public path, for a gateway that forwards it unchanged.
        .route("/v1/socket/ticket", post(ticket::mint))
        .route("/internal/publish", post(internal::publish))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(service.clone(), request_id))
        .with_state(service)
}
