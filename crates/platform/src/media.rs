//! Media types every HTTP surface checks the same way, and where it serves its OpenAPI document.

use http::{HeaderMap, header};

/// Where every HTTP surface that has an OpenAPI document serves it.
pub const OPENAPI_PATH: &str = "/openapi.json";

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

/// Why a body is not the JSON a handler expects; each service answers it as 400
/// `malformed_body`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonBodyError {
    #[error("the body is not UTF-8 (byte {0})")]
    NotUtf8(usize),
    #[error("the body is not valid JSON (line {line}, column {column})")]
    Syntax { line: usize, column: usize },
    #[error("the body does not have the expected shape: {0}")]
    Shape(String),
}

/// The one JSON-body reader: UTF-8 first (RFC 8259 §8.1; serde_json would skip an ignored
/// string unchecked), then the expected shape.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonBodyError> {
    let text = std::str::from_utf8(bytes).map_err(|e| JsonBodyError::NotUtf8(e.valid_up_to()))?;
    serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => JsonBodyError::Shape(e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => {
                JsonBodyError::Syntax { line: e.line(), column: e.column() }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn json_bodies() {
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Body {
            name: String,
        }
        assert_eq!(parse_json::<Body>(br#"{"name":"a","extra":1}"#), Ok(Body { name: "a".into() }));
        assert_eq!(parse_json::<Body>(b"{\"name\":\"a\",\"x\":\"\xff\"}"), Err(JsonBodyError::NotUtf8(17)));
        assert!(matches!(parse_json::<Body>(b"{"), Err(JsonBodyError::Syntax { line: 1, .. })));
        assert!(matches!(parse_json::<Body>(br#"{"name":1}"#), Err(JsonBodyError::Shape(_))));
        assert!(matches!(parse_json::<Body>(b"[]"), Err(JsonBodyError::Shape(_))));
    }

    /// JSON Schema's `integer` is any number with a zero fraction (`264.0` included), and RFC
    /// 8259 does not tell `264` from `264.0`: a client that writes either means the same.
    #[test]
    fn a_number_with_a_zero_fraction_is_the_integer_it_equals() {
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Limit {
            requests: u64,
            offset: Option<i32>,
            list: Vec<u8>,
        }
        assert_eq!(
            parse_json::<Limit>(br#"{"requests": 264.0, "offset": -3.0, "list": [1.0, 2e0]}"#),
            Ok(Limit { requests: 264, offset: Some(-3), list: vec![1, 2] })
        );
        for fraction in [&br#"{"requests": 264.5, "list": []}"#[..], br#"{"requests": 1e30, "list": []}"#] {
            assert!(matches!(parse_json::<Limit>(fraction), Err(JsonBodyError::Shape(_))));
        }
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Ratio {
            ratio: f64,
        }
        assert_eq!(parse_json::<Ratio>(br#"{"ratio": 2.0}"#), Ok(Ratio { ratio: 2.0 }));
    }

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
