//! How the HTTP surface's errors answer: each [`Error`] is mapped onto the contract's one
//! problem+json renderer (status, code, detail, field errors, `Retry-After`), carrying the
//! request id (held in a task-local for the request's duration).

use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use crate::error::{Error, FieldError};

tokio::task_local! {
    /// The current request's id, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

/// The problem document, as the OpenAPI description shows it (the contract's
/// [`auth_contract::problem::Problem`] renders it). As a response (`response = Problem` in a
/// route's annotation) it is the one `application/problem+json` answer every error shares.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl<'r> utoipa::ToResponse<'r> for Problem {
    fn response() -> (&'r str, RefOr<utoipa::openapi::Response>) {
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
        let response = ResponseBuilder::new()
            .description("A problem (RFC 9457): `code` says which; `Retry-After` comes with 429 and 503.")
            .content(auth_contract::problem::CONTENT_TYPE, content)
            .build();
        ("Problem", response.into())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let detail = match &self {
            Error::Internal(message) => {
                // The real cause is logged, never returned.
                tracing::error!(error = %message, "internal error");
                "the server could not complete the request".to_owned()
            }
            Error::Unavailable(message) => {
                tracing::warn!(error = %message, "dependency unavailable");
                "a service this request needs is unavailable; retry shortly".to_owned()
            }
            other => other.to_string(),
        };
        let mut problem = auth_contract::problem::Problem::new(self.wire_code(), detail)
            .with_request_id(REQUEST_ID.try_with(Clone::clone).ok());
        match &self {
            Error::Validation(fields) if !fields.is_empty() => {
                problem = problem.with_errors(serde_json::to_value(fields).unwrap_or_default());
            }
            Error::RateLimited { retry_after } => problem = problem.with_retry_after(retry_after.as_secs()),
            _ => {}
        }
        problem.into_response()
    }
}
