//! Media types every HTTP surface checks the same way.

use http::{HeaderMap, header};

/// Whether the body is declared JSON: `application/json` or any `application/*+json`,
/// parameters (`; charset=utf-8`) and case aside.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for yes in ["application/json", "Application/JSON; charset=utf-8", "application/problem+json"] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(yes));
            assert!(is_json(&h), "{yes}");
        }
        for no in ["text/plain", "application/jsonx", "text/json"] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(no));
            assert!(!is_json(&h), "{no}");
        }
    }
}
