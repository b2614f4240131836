//! The one error type of the socket service's HTTP surface, answered through the contract's
//! one problem+json renderer with the request id, like every Portcullis service.

use auth_contract::{ClientError, ErrorCode};
use axum::response::{IntoResponse, Response};

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

    /// The wire code: status, problem code and header rules come from the contract's table.
    pub fn wire_code(&self) -> ErrorCode {
        match self {
            Self::TokenMissing => ErrorCode::TokenMissing,
            Self::Denied { code, .. } => *code,
            Self::TicketInvalid => ErrorCode::TokenInvalid,
            Self::OriginNotAllowed => ErrorCode::OriginNotAllowed,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::MalformedBody(_) => ErrorCode::MalformedBody,
            Self::Validation(_) => ErrorCode::ValidationFailed,
            Self::BodyTooLarge(_) => ErrorCode::BodyTooLarge,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::UpgradeRequired => ErrorCode::UpgradeRequired,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Internal(_) => ErrorCode::Internal,
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
        match &self.error {
            ApiError::Unavailable(cause) => {
                tracing::warn!(request_id = %self.request_id, %cause, "dependency unavailable");
            }
            // The cause stays in the log; the body says nothing internal.
            ApiError::Internal(cause) => tracing::error!(request_id = %self.request_id, %cause, "internal error"),
            _ => {}
        }
        let mut problem = auth_contract::problem::Problem::new(self.error.wire_code(), self.error.to_string())
            .with_request_id(Some(self.request_id));
        if let ApiError::RateLimited { retry_after } = &self.error {
            problem = problem.with_retry_after(retry_after.as_secs());
        }
        problem.into_response()
    }
}
