//! `/health`, `/ready` and `/metrics`.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{ApiError, Problem, RequestId};
use crate::service::SocketService;

const READY_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the auth service answers this service's token, the context store and the bus
/// are reachable.
pub async fn ready(
    State(service): State<SocketService>,
    RequestId(request_id): RequestId,
) -> Result<Response, Problem> {
    let checks = async {
        service.auth().list_allowed_origins().await.map_err(|e| format!("auth service: {e}"))?;
        service.contexts().ping().await.map_err(|e| e.to_string())?;
        service.inner.deps.bus.ping().await.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    };
    match tokio::time::timeout(READY_TIMEOUT, checks).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"})).into_response()),
        Ok(Err(cause)) => Err(ApiError::Unavailable(cause).at(&request_id)),
        Err(_) => Err(ApiError::Unavailable("readiness checks timed out".to_owned()).at(&request_id)),
    }
}

pub async fn metrics(State(service): State<SocketService>) -> Response {
    let mut response = service.metrics().render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}
