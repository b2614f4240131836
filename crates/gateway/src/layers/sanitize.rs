//! Sanitising: every client-supplied context header (`X-User-Id`, `X-Auth-Kind`, …) is removed
//! before anything else looks at the request, and a path that different parsers could read
//! differently (`.`/`..` segments, empty segments, encoded `/`, `\` or `.`, control bytes) is
//! refused with 400, since routes are matched on the raw path and the upstream may normalise it.

use auth_contract::headers::strip_context_headers;
use axum::{
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::error::GatewayError;

/// Why a path is refused, or `None` when it is unambiguous.
pub fn ambiguous_path(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("the path must start with /");
    }
    if path.len() > 1 && path[1..].split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Some("the path has an empty, `.` or `..` segment");
    }
    let encoded = |code: &[u8]| path.as_bytes().windows(3).any(|w| w[0] == b'%' && w[1..].eq_ignore_ascii_case(code));
    if [b"2f", b"5c", b"2e", b"00"].iter().any(|code| encoded(*code)) {
        return Some("the path has an encoded separator or dot");
    }
    if path.bytes().any(|b| b == b'\\' || b.is_ascii_control()) {
        return Some("the path has a backslash or control character");
    }
    None
}

pub async fn layer(mut request: Request, next: Next) -> Response {
    strip_context_headers(request.headers_mut());
    // `/` alone and a trailing slash are fine; only interior ambiguity is refused.
    let path = request.uri().path();
    let trimmed = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    if let Some(reason) = ambiguous_path(if trimmed.is_empty() { "/" } else { trimmed }) {
        return GatewayError::BadRequest(reason.to_owned()).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, routing::any};
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn ambiguous_paths_are_named() {
        for path in [
            "/v1/user/../admin",
            "/v1/user/./x",
            "/v1//user",
            "/v1/user/%2e%2e/admin",
            "/v1/user%2Fadmin",
            "/v1/user%5cadmin",
            "/v1/a\\b",
            "/v1/%00",
        ] {
            assert!(ambiguous_path(path).is_some(), "{path}");
        }
        for path in ["/", "/v1/user/orders", "/v1/user/orders/7", "/v1/user/a%20b", "/v1/user/.well"] {
            assert_eq!(ambiguous_path(path), None, "{path}");
        }
    }

    #[tokio::test]
    async fn context_headers_never_reach_the_inner_service() {
        let app = Router::new()
            .route(
                "/{*rest}",
                any(|request: Request| async move {
                    let names: Vec<String> = request.headers().keys().map(|k| k.as_str().to_owned()).collect();
                    names.join(",")
                }),
            )
            .layer(axum::middleware::from_fn(layer));
        let request = Request::builder()
            .uri("/v1/user/x")
            .header("x-user-id", "admin")
            .header("X-Auth-Kind", "service")
            .header("x-context-signature", "v1=00")
            .header("x-scopes", "*")
            .header("x-kept", "1")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"x-kept");

        let request = Request::builder().uri("/v1/user/../admin").body(Body::empty()).unwrap();
        assert_eq!(app.oneshot(request).await.unwrap().status(), 400);
    }
}
