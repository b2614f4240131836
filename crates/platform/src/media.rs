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
/// string unchecked), then the expected shape, where a number with a zero fraction is the
/// integer it equals (JSON Schema's `integer` includes `264.0`, and the OpenAPI documents
/// promise JSON Schema's types). A body that reads as it is is never rewritten.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonBodyError> {
    use serde_json::error::Category;
    let text = std::str::from_utf8(bytes).map_err(|e| JsonBodyError::NotUtf8(e.valid_up_to()))?;
    let error = match serde_json::from_str(text) {
        Ok(parsed) => return Ok(parsed),
        Err(e) => e,
    };
    match error.classify() {
        Category::Data => {
            let mut value: serde_json::Value =
                serde_json::from_str(text).map_err(|_| JsonBodyError::Shape(error.to_string()))?;
            integral_numbers_as_integers(&mut value);
            T::deserialize(value).map_err(|_| JsonBodyError::Shape(error.to_string()))
        }
        Category::Syntax | Category::Eof | Category::Io => {
            Err(JsonBodyError::Syntax { line: error.line(), column: error.column() })
        }
    }
}

/// Rewrites every float with a zero fraction that an `i64` or `u64` holds as that integer.
fn integral_numbers_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(number) => {
            if let Some(float) = number.as_f64().filter(|f| number.is_f64() && f.fract() == 0.0) {
                // Exactly representable bounds: -2^63 and 2^64.
                if (-9_223_372_036_854_775_808.0..0.0).contains(&float) {
                    *number = (float as i64).into();
                } else if (0.0..18_446_744_073_709_551_616.0).contains(&float) {
                    *number = (float as u64).into();
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers_as_integers),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
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
