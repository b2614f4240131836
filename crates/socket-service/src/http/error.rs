//! The one error type of the socket service's HTTP surface, answered through the contract's
//! one problem+json renderer with the request id, like every Portcullis service.

use auth_contract::{
    ClientError, ErrorCode,
    codes::{as_snake, http_status},
};
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credential where one is required.
    #[error("a credential is required: Authorization: Bearer, the `bearer, <token>` subprotocol or a ticket")]
    TokenMissing,
    /// The auth service refused the credential (or its origin).
    #[error("{message}")]
    Denied { code: ErrorCode, message: String },
    #[error("the ticket is unknown, expired or already used")]
    TicketInvalid,
    #[error("the origin is not allowed for this credential")]
    OriginNotAllowed,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    MalformedBody(String),
    #[error("{0}")]
    Validation(String),
    #[error("the body is over {0} bytes")]
    BodyTooLarge(usize),
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    #[error("this endpoint only accepts WebSocket upgrades")]
    UpgradeRequired,
    #[error("a dependency is unavailable; retry later")]
    Unavailable(String),
    /// Too many failed authentications from this address (`AUTH_FAILURE_LIMIT`).
    #[error("too many failed authentications from this address; retry later")]
    RateLimited { retry_after: std::time::Duration },
    #[error("internal error")]
    Internal(String),
}

impl From<ClientError> for ApiError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Denied { code, message } => Self::Denied { code, message },
            ClientError::Unavailable(message) => Self::Unavailable(message),
        }
    }
}

impl From<platform::Unavailable> for ApiError {
    fn from(err: platform::Unavailable) -> Self {
        Self::Unavailable(err.to_string())
    }
}

impl ApiError {
    pub fn rate_limited(retry_after: std::time::Duration) -> Self {
        Self::RateLimited { retry_after }
    }

    pub fn at(self, request_id: &str) -> Problem {
        Problem { error: self, request_id: request_id.to_owned() }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::TokenMissing => (StatusCode::UNAUTHORIZED, "token_missing"),
            Self::Denied { code, .. } => {
                (StatusCode::from_u16(http_status(*code)).unwrap_or(StatusCode::UNAUTHORIZED), as_snake(*code))
            }
            Self::TicketInvalid => (StatusCode::UNAUTHORIZED, "token_invalid"),
            Self::OriginNotAllowed => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::UpgradeRequired => (StatusCode::UPGRADE_REQUIRED, "upgrade_required"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// An [`ApiError`] with the request it answers.
#[derive(Debug)]
pub struct Problem {
    pub error: ApiError,
    pub request_id: String,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (status, code) = self.error.parts();
        match &self.error {
            ApiError::Unavailable(cause) => {
                tracing::warn!(request_id = %self.request_id, %cause, "dependency unavailable");
            }
            // The cause stays in the log; the body says nothing internal.
            ApiError::Internal(cause) => tracing::error!(request_id = %self.request_id, %cause, "internal error"),
            _ => {}
        }
        let mut problem = auth_contract::problem::Problem::new(status, code, self.error.to_string())
            .with_request_id(Some(self.request_id));
        if let ApiError::RateLimited { retry_after } = &self.error {
            problem = problem.with_retry_after(retry_after.as_secs());
        }
        problem.into_response()
    }
}
