//! Liveness, readiness and metrics, at the root rather than under `/api/v1/auth`, and the
//! health body.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{error::Error, http::error::Problem, service::AuthService};

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "system", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database and the bus are reachable.
#[utoipa::path(get, path = "/ready", tag = "system", responses(
    (status = 200, body = Health), (status = 503, response = Problem),
))]
pub async fn ready(State(service): State<AuthService>) -> Result<Json<Health>, Error> {
    service.ready().await?;
    Ok(Json(Health { status: "ready" }))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(service): State<AuthService>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        service.render_metrics().await,
    )
}
