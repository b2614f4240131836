//! The one RFC 9457 problem+json answer every Portcullis service gives (SPEC §4):
//! `{"type","title","status","detail","code","request_id"}` plus `errors` for validation
//! failures, with the header rules that go with a status: `WWW-Authenticate: Bearer` on every
//! 401 (`error="invalid_token"` once a credential was presented), `Retry-After` on every 429
//! and 503, all read from the one table in [`codes`]. Each service maps its own error type
//! onto a wire code and a [`Problem`]; none renders one itself.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::Value;

use crate::{
    ErrorCode,
    codes::{self, Challenge},
};

pub const CONTENT_TYPE: &str = "application/problem+json";
/// Seconds a client should wait after a 503 that names no better figure.
pub const UNAVAILABLE_RETRY_AFTER: u64 = 5;

/// A problem, ready to answer: a wire code (whose status and header rules come from
/// [`codes::rule_of`]) and what happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    code: ErrorCode,
    detail: String,
    request_id: Option<String>,
    errors: Option<Value>,
    retry_after: Option<u64>,
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

impl Problem {
    /// A problem for a wire code, answered as the contract's table says.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into(), request_id: None, errors: None, retry_after: None }
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

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(codes::http_status(self.code)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn code(&self) -> ErrorCode {
        self.code
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
        let rule = codes::rule_of(self.code);
        let status = self.status();
        let body = Body {
            kind: format!("urn:portcullis:problem:{}", rule.code),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: &self.detail,
            code: rule.code,
            request_id: self.request_id.as_deref(),
            errors: self.errors.as_ref(),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        let challenge = match rule.challenge {
            Challenge::None => None,
            Challenge::Bearer => Some("Bearer"),
            Challenge::InvalidToken => Some(r#"Bearer error="invalid_token""#),
        };
        if let Some(challenge) = challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if rule.retry_after {
            let fallback = if status == StatusCode::SERVICE_UNAVAILABLE { UNAVAILABLE_RETRY_AFTER } else { 1 };
            headers.insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after.unwrap_or(fallback)));
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
            answer(Problem::new(ErrorCode::TokenRevoked, "revoked").with_request_id(Some("r1".into()))).await;
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
        let (_, headers, body) = answer(Problem::new(ErrorCode::TokenMissing, "none")).await;
        assert_eq!(header(&headers, header::WWW_AUTHENTICATE), Some("Bearer"));
        assert_eq!(body["request_id"], Value::Null);
        let webhook = Problem::new(ErrorCode::WebhookSignatureInvalid, "bad");
        assert_eq!(header(&answer(webhook).await.1, header::WWW_AUTHENTICATE), None);
        let (_, headers, _) = answer(Problem::new(ErrorCode::Unavailable, "down")).await;
        assert_eq!(header(&headers, header::RETRY_AFTER), Some("5"));
        let limited = Problem::new(ErrorCode::RateLimited, "slow down").with_retry_after(0);
        assert_eq!(header(&answer(limited).await.1, header::RETRY_AFTER), Some("1"));
        let invalid = Problem::new(ErrorCode::ValidationFailed, "bad")
            .with_errors(json!([{"field": "email", "message": "is not an email"}]));
        let (_, headers, body) = answer(invalid).await;
        assert_eq!(
            (header(&headers, header::WWW_AUTHENTICATE), body["errors"][0]["field"].as_str()),
            (None, Some("email"))
        );
    }
}
