//! The gateway's one error type and its problem+json answer. Each error records where it came
//! from (the caller, the auth service, an upstream, or the gateway itself) and whether a
//! client may retry it, so logs and metrics can tell a bad request from a sick upstream.

use std::time::Duration;

use auth_contract::{ClientError, ErrorCode, codes, problem::Problem};
use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

tokio::task_local! {
    /// The current request's id, set by the request-id layer so every problem carries it.
    pub static REQUEST_ID: String;
}

/// Where an error came from; the error's response carries it as an extension for the access
/// log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The request itself was refused.
    Downstream,
    /// The auth service (refusal or outage).
    Auth,
    /// The service behind the route.
    Upstream,
    /// The gateway.
    Internal,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Downstream => "downstream",
            Self::Auth => "auth",
            Self::Upstream => "upstream",
            Self::Internal => "internal",
        }
    }
}

/// One rejected place of a well-formed request, as a `validation_failed` problem lists it in
/// `errors` (the shape the auth service's validation errors have).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Where: for a webhook payload, the failing instance path as a JSON pointer.
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The auth service refused the credential or the request.
    #[error("{message}")]
    Denied { code: ErrorCode, message: String },
    /// The auth service (or Redis where the gateway must not guess) is unreachable: fail closed.
    #[error("{dependency} is unavailable")]
    Unavailable { dependency: &'static str },
    #[error("no route for this path")]
    NotFound,
    /// A method the target does not allow; `allow` names those it does, for the `Allow` header
    /// RFC 9110 §15.5.6 requires, where the router does not add it itself.
    #[error("method not allowed")]
    MethodNotAllowed { allow: Option<&'static str> },
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// Malformed input (`malformed_body`, 400).
    #[error("{0}")]
    BadRequest(String),
    /// A path SPEC §6 refuses to route (`malformed_path`, 400).
    #[error("{0}")]
    MalformedPath(&'static str),
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// Well-formed but invalid (`validation_failed`, 422), such as a webhook payload that
    /// fails its source's schema; `errors` says where.
    #[error("{detail}")]
    Invalid { detail: String, errors: Vec<FieldError> },
    /// A webhook whose signature, timestamp or replay check failed (401).
    #[error("{0}")]
    SignatureInvalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("this route requires scope `{0}`")]
    InsufficientScope(String),
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    /// The upstream's breaker is open or it refused the connection.
    #[error("the upstream service is unavailable")]
    UpstreamUnavailable,
    #[error("the upstream service did not answer in time")]
    UpstreamTimeout,
    /// The upstream answered with something that is not HTTP.
    #[error("the upstream service answered badly")]
    BadGateway,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ClientError> for GatewayError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Denied { code, message } => Self::Denied { code, message },
            ClientError::Unavailable(_) => Self::Unavailable { dependency: "auth service" },
        }
    }
}

impl GatewayError {
    /// The wire code: status, problem code and header rules come from the contract's table.
    pub fn wire_code(&self) -> ErrorCode {
        match self {
            Self::Denied { code, .. } => *code,
            Self::Unavailable { .. } | Self::UpstreamUnavailable => ErrorCode::Unavailable,
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Self::BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            Self::BadRequest(_) => ErrorCode::MalformedBody,
            Self::MalformedPath(_) => ErrorCode::MalformedPath,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::Invalid { .. } => ErrorCode::ValidationFailed,
            Self::SignatureInvalid(_) => ErrorCode::WebhookSignatureInvalid,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::InsufficientScope(_) => ErrorCode::InsufficientScope,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::UpstreamTimeout => ErrorCode::UpstreamTimeout,
            Self::BadGateway => ErrorCode::BadGateway,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(codes::http_status(self.wire_code())).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The stable problem `code`.
    pub fn code(&self) -> &'static str {
        codes::as_snake(self.wire_code())
    }

    pub fn source(&self) -> Source {
        match self {
            Self::Denied { .. } | Self::Unavailable { .. } => Source::Auth,
            Self::UpstreamUnavailable | Self::UpstreamTimeout | Self::BadGateway => Source::Upstream,
            Self::Internal(_) => Source::Internal,
            _ => Source::Downstream,
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::UpstreamUnavailable | Self::UpstreamTimeout | Self::RateLimited { .. }
        )
    }

    /// A limit's own `Retry-After`; a 503 gets the contract's default.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } => Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
            _ => None,
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let detail = match &self {
            Self::Internal(message) => {
                tracing::error!(error = %message, "gateway internal error");
                "the gateway could not complete the request".to_owned()
            }
            other => other.to_string(),
        };
        let mut problem =
            Problem::new(self.wire_code(), detail).with_request_id(REQUEST_ID.try_with(Clone::clone).ok());
        if let Some(seconds) = self.retry_after() {
            problem = problem.with_retry_after(seconds);
        }
        if let Self::Invalid { errors, .. } = &self
            && !errors.is_empty()
        {
            problem = problem.with_errors(serde_json::to_value(errors).unwrap_or_default());
        }
        let mut response = problem.into_response();
        if let Self::MethodNotAllowed { allow: Some(allow) } = self {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response.extensions_mut().insert(self.source());
        response
    }
}
