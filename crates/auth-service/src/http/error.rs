//! RFC 9457 problem+json for every error the HTTP surface returns, and the request id that
//! each problem carries (held in a task-local for the request's duration).

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::error::{Error, FieldError};

tokio::task_local! {
    /// The current request's id, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The problem document.
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

fn status(err: &Error) -> StatusCode {
    match err {
        Error::MalformedBody(_) => StatusCode::BAD_REQUEST,
        Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::InvalidCredentials
        | Error::TokenMissing
        | Error::TokenInvalid(_)
        | Error::TokenExpired
        | Error::TokenRevoked
        | Error::SessionEnded
        | Error::SessionIdle
        | Error::RefreshInvalid
        | Error::KeyInvalid
        | Error::KeyRevoked => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) | Error::IpNotAllowed | Error::OriginNotAllowed | Error::InsufficientScope(_) => {
            StatusCode::FORBIDDEN
        }
        Error::NotFound => StatusCode::NOT_FOUND,
        Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Error::EmailTaken | Error::RefreshConflict => StatusCode::CONFLICT,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Seconds a client should wait after a 503.
const UNAVAILABLE_RETRY_AFTER: u64 = 5;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status(&self);
        let code = self.code();
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
        let errors = match &self {
            Error::Validation(fields) => fields.clone(),
            _ => Vec::new(),
        };
        let problem = Problem {
            kind: format!("urn:portcullis:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            request_id: REQUEST_ID.try_with(Clone::clone).ok(),
            errors,
        };
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match self {
                Error::TokenMissing | Error::InvalidCredentials => "Bearer",
                _ => "Bearer error=\"invalid_token\"",
            };
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        let retry_after = match &self {
            Error::RateLimited { retry_after } => Some(retry_after.as_secs().max(1)),
            Error::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
