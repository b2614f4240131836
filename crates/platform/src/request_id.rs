//! The one request-id rule of every service (SPEC §6): a caller's `X-Request-Id` is kept when
//! it is 1–128 characters of `[A-Za-z0-9._:-]` (so it can never smuggle a header or a log
//! line), otherwise replaced by a new UUIDv4.

use http::{HeaderMap, HeaderName};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MAX_LEN: usize = 128;

/// Whether a caller's id is kept as it is.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The request's id: the caller's when it is valid, otherwise a new one.
pub fn keep_or_new(headers: &HeaderMap) -> String {
    match headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
        Some(id) if is_valid(id) => id.to_owned(),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn kept_or_replaced() {
        for kept in ["abc-123", "a.b_c:d", &"x".repeat(128)] {
            assert!(is_valid(kept), "{kept}");
        }
        for replaced in ["", "a b", "a/b", "a\"b", "ünï", &"x".repeat(129), "id\r\nx-evil: 1"] {
            assert!(!is_valid(replaced), "{replaced:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("a/b"));
        let fresh = keep_or_new(&headers);
        assert!(uuid::Uuid::parse_str(&fresh).is_ok(), "{fresh}");
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("trace-7"));
        assert_eq!(keep_or_new(&headers), "trace-7");
        assert!(uuid::Uuid::parse_str(&keep_or_new(&HeaderMap::new())).is_ok());
    }
}
