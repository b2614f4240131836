//! The table machinery of the bad-input tests (`bad_input.rs`, `bad_input_credentials.rs`): a row
//! is one request and the answer it must get; `run` sends every row and reports every failing one
//! at once, checking each problem+json body (and, on 401, the `WWW-Authenticate` challenge).

// Test code: a panic is how a row reports its failure.

use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_problem, expect_status};

/// The default route body limit (1 MiB); a body one byte larger must be refused.
const BODY_LIMIT: usize = 1024 * 1024;
pub const JSON: Option<&str> = Some("application/json");

enum Expect {
    Status(u16),
    /// The status, and every key of this object equal in the response body.
    Returns(u16, Value),
    /// Status, code, and the field an `errors` entry must name.
    Problem(u16, &'static str, Option<&'static str>),
}

pub struct Row {
    name: String,
    method: Method,
    url: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
    expect: Expect,
}

pub fn row(name: impl Into<String>, method: Method, url: String) -> Row {
    Row {
        name: name.into(),
        method,
        url,
        content_type: None,
        body: None,
        headers: Vec::new(),
        expect: Expect::Status(200),
    }
}

impl Row {
    pub fn json(self, body: &Value) -> Self {
        self.raw(JSON, body.to_string())
    }

    pub fn raw(mut self, content_type: Option<&'static str>, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = content_type;
        self.body = Some(body.into());
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    pub fn status(mut self, status: u16) -> Self {
        self.expect = Expect::Status(status);
        self
    }

    pub fn returns(mut self, status: u16, subset: Value) -> Self {
        self.expect = Expect::Returns(status, subset);
        self
    }

    pub fn problem(mut self, status: u16, code: &'static str) -> Self {
        self.expect = Expect::Problem(status, code, None);
        self
    }

    /// 422 `validation_failed` naming `field`.
    pub fn invalid(mut self, field: &'static str) -> Self {
        self.expect = Expect::Problem(422, "validation_failed", Some(field));
        self
    }
}

/// Runs every row in order and fails once, listing every row that did not answer as expected.
pub async fn run(app: &TestApp, rows: Vec<Row>) {
    let total = rows.len();
    let mut failures = Vec::new();
    for row in rows {
        let name = row.name.clone();
        if let Err(panic) = AssertUnwindSafe(check(app, row)).catch_unwind().await {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("[{name}] {message}"));
        }
    }
    assert!(failures.is_empty(), "{} of {total} rows failed:\n{}", failures.len(), failures.join("\n"));
}

async fn check(app: &TestApp, row: Row) {
    let mut request = app.http.request(row.method, &row.url);
    if let Some(content_type) = row.content_type {
        request = request.header("content-type", content_type);
    }
    for (name, value) in row.headers {
        request = request.header(name, value);
    }
    if let Some(body) = row.body {
        request = request.body(body);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("request failed: {e}"));
    assert_ne!(response.status().as_u16(), 500, "bad input answered 500");
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap_or_default().to_owned());
    let (challenge, allow) = (header("www-authenticate"), header("allow"));
    match row.expect {
        Expect::Status(status) => {
            expect_status(response, StatusCode::from_u16(status).unwrap()).await;
        }
        Expect::Returns(status, subset) => {
            let body = expect_status(response, StatusCode::from_u16(status).unwrap()).await;
            for (key, value) in subset.as_object().unwrap() {
                assert_eq!(&body[key], value, "`{key}` differs in {body}");
            }
        }
        Expect::Problem(status, code, field) => {
            let body = expect_problem(response, status, code).await;
            for key in ["type", "title", "detail"] {
                assert!(body[key].as_str().is_some_and(|v| !v.is_empty()), "problem without {key}: {body}");
            }
            if let Some(field) = field {
                let named = body["errors"]
                    .as_array()
                    .is_some_and(|errors| errors.iter().any(|e| e["field"] == field && e["message"].is_string()));
                assert!(named, "no errors entry for field {field}: {body}");
            }
            if status == 405 {
                assert!(allow.is_some(), "405 without Allow (RFC 9110 §15.5.6)");
            }
            if status == 401 {
                let challenge = challenge.unwrap_or_else(|| panic!("401 without WWW-Authenticate"));
                assert!(challenge.starts_with("Bearer"), "WWW-Authenticate: {challenge}");
                // A presented credential (any token) is named invalid in the challenge.
                if !matches!(code, "token_missing" | "invalid_credentials") {
                    assert!(challenge.contains(r#"error="invalid_token""#), "WWW-Authenticate: {challenge}");
                }
            }
        }
    }
}

/// `valid` padded with an extra string field to exactly `BODY_LIMIT + 1` bytes of JSON.
pub fn oversized(valid: &Value) -> Vec<u8> {
    let mut body = valid.clone();
    body["padding"] = json!("");
    let base = body.to_string().len();
    body["padding"] = json!("x".repeat(BODY_LIMIT + 1 - base));
    let bytes = body.to_string().into_bytes();
    assert_eq!(bytes.len(), BODY_LIMIT + 1);
    bytes
}

/// `credential` (a `pc…_` token) with its last checksum character changed.
pub fn bad_checksum(credential: &str) -> String {
    let mut text = credential.to_owned();
    let last = text.pop().unwrap();
    text.push(if last == 'A' { 'B' } else { 'A' });
    text
}
