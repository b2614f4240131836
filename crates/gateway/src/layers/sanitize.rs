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
mod props;

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

    const ROUTES: &str = "[[routes]]\nprefix = \"/v1/user\"\nupstream = \"http://127.0.0.1:9001\"\n\n\
         [[routes]]\nprefix = \"/v1/user/orders\"\nupstream = \"http://127.0.0.1:9002\"\n\n\
         [[routes]]\nprefix = \"/v1/public\"\nupstream = \"http://127.0.0.1:9003\"\nauth = [\"none\"]\n\n\
         [[routes]]\nprefix = \"/v1/public/admin\"\nupstream = \"http://127.0.0.1:9004\"\nauth = [\"user\"]\n";

    async fn send(app: &Router, path: &str) -> (u16, String) {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The route chosen and the URI the proxy would forward and sign, behind the real
    /// sanitising and route-matching layers.
    async fn routed_app() -> Router {
        use axum::{Extension, middleware::from_fn_with_state};

        use crate::layers::{MatchedRoute, route_match};
        let gateway = crate::app::test_gateway(ROUTES).await;
        let inner = Router::new()
            .fallback(any(|Extension(m): Extension<MatchedRoute>, request: Request| async move {
                format!("{} {}", m.policy.prefix, request.uri())
            }))
            .layer(from_fn_with_state(gateway, route_match::layer));
        Router::new().fallback_service(inner).layer(axum::middleware::from_fn(layer))
    }

    #[tokio::test]
    async fn paths_are_routed_forwarded_and_signed_in_their_normalised_form() {
        let app = routed_app().await;
        for (path, expected) in [
            ("/v1/user/%6Frders/7", "/v1/user/orders /v1/user/orders/7"),
            ("/v1/user/%6frders/7?q=%6F;x", "/v1/user/orders /v1/user/orders/7?q=%6F;x"),
            ("/v1/public/%61dmin", "/v1/public/admin /v1/public/admin"),
            ("/v1/user/a%40b%2b", "/v1/user /v1/user/a%40b%2B"),
            ("/v1/user/caf%c3%a9", "/v1/user /v1/user/caf%C3%A9"),
            ("/v1/user/orders/", "/v1/user/orders /v1/user/orders/"),
            ("/v1/user/%7Eme", "/v1/user /v1/user/~me"),
        ] {
            assert_eq!(send(&app, path).await, (200, expected.to_owned()), "{path}");
        }
    }

    #[tokio::test]
    async fn paths_a_decoding_server_could_read_otherwise_are_malformed() {
        let app = routed_app().await;
        for path in [
            "/v1/user/orders;x/7",
            "/v1/user/orders%3bx/7",
            "/v1/public;/admin",
            "/v1/user/%2e%2e/admin",
            "/v1/user/%2E/orders",
            "/v1/user%2forders",
            "/v1/user/%5corders",
            "/v1/user/%25",
            "/v1/user/%00",
            "/v1/user/%1f",
            "/v1/user/%7F",
            "/v1/user/%zz",
            "/v1/user/a%2",
            "/v1//user/orders",
            "/v1/user/ORDERS/7",
            "/v1/Public/admin",
            "/v1/public/ADMIN",
            "/v1/public/%41dmin",
        ] {
            let (status, body) = send(&app, path).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains("\"code\":\"malformed_path\""), "{path}: {body}");
        }
    }

    #[tokio::test]
    async fn built_in_routes_are_chosen_on_the_normalised_path() {
        let app = crate::app::router(crate::app::test_gateway("").await);
        // The auth service's address answers nothing: a forwarded request is a 503, not a 404.
        assert_eq!(send(&app, "/v1/%61uth/login").await.0, 503);
        assert_eq!(send(&app, "/v1/%61uth/internal/validate").await.0, 404);
        assert_eq!(send(&app, "/v1/auth/%69nternal/validate").await.0, 404);
    }
}
