//! The one RFC 9457 problem+json answer every Portcullis service gives (SPEC §4):
//! `{"type","title","status","detail","code","request_id"}` plus `errors` for validation
//! failures, with the header rules that go with a status: `WWW-Authenticate: Bearer` on every
//! 401 (`error="invalid_token"` once a credential was presented), `Retry-After` on every 429
//! and 503. Each service maps its own error type onto a [`Problem`]; none renders one itself.

use std::borrow::Cow;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::Value;

use crate::{ErrorCode, codes};

pub const CONTENT_TYPE: &str = "application/problem+json";
/// Seconds a client should wait after a 503 that names no better figure.
pub const UNAVAILABLE_RETRY_AFTER: u64 = 5;

/// A problem, ready to answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    status: StatusCode,
    code: Cow<'static, str>,
    detail: String,
    request_id: Option<String>,
    errors: Option<Value>,
    retry_after: Option<u64>,
    challenge: bool,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a Value>,
}

/// The codes whose 401 means "no credential was presented": their challenge names no error.
fn nothing_presented(code: &str) -> bool {
    matches!(code, "token_missing" | "invalid_credentials")
}

impl Problem {
    pub fn new(status: StatusCode, code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
            request_id: None,
            errors: None,
            retry_after: None,
            challenge: true,
        }
    }

    /// A problem for a wire code, with the status the contract gives it.
    pub fn from_code(code: ErrorCode, detail: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(codes::http_status(code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, codes::as_snake(code), detail)
    }

    #[must_use]
    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    /// The per-field list of a validation failure.
    #[must_use]
    pub fn with_errors(mut self, errors: Value) -> Self {
        self.errors = Some(errors);
        self
    }

    /// `Retry-After` in seconds (at least 1); a 503 without one gets
    /// [`UNAVAILABLE_RETRY_AFTER`].
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// A 401 that is not about a Bearer credential (a webhook's signature): no challenge.
    #[must_use]
    pub fn without_challenge(mut self) -> Self {
        self.challenge = false;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            kind: format!("urn:portcullis:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: &self.code,
            request_id: self.request_id.as_deref(),
            errors: self.errors.as_ref(),
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if self.status == StatusCode::UNAUTHORIZED && self.challenge {
            let challenge = if nothing_presented(&self.code) { "Bearer" } else { r#"Bearer error="invalid_token""# };
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        let retry_after = match self.status {
            StatusCode::SERVICE_UNAVAILABLE => Some(self.retry_after.unwrap_or(UNAVAILABLE_RETRY_AFTER)),
            StatusCode::TOO_MANY_REQUESTS => Some(self.retry_after.unwrap_or(1)),
            _ => self.retry_after,
        };
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use serde_json::json;

    use super::*;

    async fn answer(problem: Problem) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = problem.into_response();
        let (parts, body) = response.into_parts();
        let bytes = to_bytes(body, 1 << 16).await.unwrap_or_default();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn header(headers: &axum::http::HeaderMap, name: header::HeaderName) -> Option<&str> {
        headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn the_one_shape() {
        let (status, headers, body) =
            answer(Problem::from_code(ErrorCode::TokenRevoked, "revoked").with_request_id(Some("r1".into()))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(header(&headers, header::CONTENT_TYPE), Some(CONTENT_TYPE));
        assert_eq!(header(&headers, header::WWW_AUTHENTICATE), Some(r#"Bearer error="invalid_token""#));
        assert_eq!(
            body,
            json!({"type": "urn:portcullis:problem:token_revoked", "title": "Unauthorized", "status": 401,
                   "detail": "revoked", "code": "token_revoked", "request_id": "r1"})
        );
    }

    #[tokio::test]
    async fn header_rules() {
        let (_, headers, body) = answer(Problem::from_code(ErrorCode::TokenMissing, "none")).await;
        assert_eq!(header(&headers, header::WWW_AUTHENTICATE), Some("Bearer"));
        assert_eq!(body["request_id"], Value::Null);
        let webhook = Problem::new(StatusCode::UNAUTHORIZED, "signature_invalid", "bad").without_challenge();
        assert_eq!(header(&answer(webhook).await.1, header::WWW_AUTHENTICATE), None);
        let (_, headers, _) = answer(Problem::from_code(ErrorCode::Unavailable, "down")).await;
        assert_eq!(header(&headers, header::RETRY_AFTER), Some("5"));
        let limited = Problem::from_code(ErrorCode::RateLimited, "slow down").with_retry_after(0);
        assert_eq!(header(&answer(limited).await.1, header::RETRY_AFTER), Some("1"));
        let invalid = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", "bad")
            .with_errors(json!([{"field": "email", "message": "is not an email"}]));
        let (_, headers, body) = answer(invalid).await;
        assert_eq!(
            (header(&headers, header::WWW_AUTHENTICATE), body["errors"][0]["field"].as_str()),
            (None, Some("email"))
        );
    }
}
