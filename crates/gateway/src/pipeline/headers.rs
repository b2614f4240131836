//! Headers on the way in and out. In: the client's hop-by-hop headers and every header its
//! `Connection` names are removed before any stage adds a header of the gateway's own
//! (`X-Request-Id`, `traceparent`, `X-Forwarded-*`, the signed context), so a client can
//! remove none of them (SPEC §6); a WebSocket handshake is remembered for the routes that pass
//! it on. Out: security headers on every answer, without overriding what an upstream chose.

use axum::extract::Request;
use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::proxy::WebSocketRequest;

/// Built at compile time: a response copies each value without checking it again.
const SECURITY: [(HeaderName, HeaderValue); 5] = [
    (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    (header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=63072000; includeSubDomains")),
    (HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("same-site")),
];

/// Removes the client's hop-by-hop headers; says whether it asked for a WebSocket upgrade.
pub fn strip_incoming(request: &mut Request) -> Option<WebSocketRequest> {
    let method = request.method().clone();
    crate::proxy::strip_incoming(&method, request.headers_mut())
}

/// Adds the security headers an answer lacks.
pub fn secure(headers: &mut HeaderMap) {
    // Room for all of them at once (and the request id), instead of growing the map
    // the upstream's answer was parsed into once or twice on the way.
    headers.reserve(SECURITY.len() + 1);
    for (name, value) in SECURITY {
        headers.entry(name).or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn names(request: &Request) -> String {
        let mut names: Vec<&str> = request.headers().keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names.join(",")
    }

    #[test]
    fn connection_named_and_hop_by_hop_headers_are_gone_and_websocket_is_remembered() {
        let mut request = Request::builder()
            .uri("/v1/x")
            .header("connection", "x-forwarded-for, X-Kept-Not")
            .header("x-forwarded-for", "1.2.3.4")
            .header("x-kept-not", "1")
            .header("te", "trailers")
            .header("keep-alive", "timeout=5")
            .header("x-kept", "1")
            .body(Body::empty())
            .unwrap();
        assert_eq!(strip_incoming(&mut request), None);
        assert_eq!(names(&request), "x-kept");
        let mut handshake = Request::builder()
            .uri("/v1/socket")
            .header("connection", "Upgrade")
            .header("upgrade", "WebSocket")
            .header("sec-websocket-key", "k")
            .body(Body::empty())
            .unwrap();
        assert_eq!(strip_incoming(&mut handshake), Some(WebSocketRequest));
        assert_eq!(names(&handshake), "sec-websocket-key");
        let mut other = Request::builder()
            .uri("/v1/x")
            .header("connection", "upgrade")
            .header("upgrade", "h2c")
            .body(Body::empty())
            .unwrap();
        assert_eq!(strip_incoming(&mut other), None);
        assert_eq!(names(&other), "");
    }

    #[test]
    fn security_headers_are_added_but_an_upstream_choice_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
        secure(&mut headers);
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "SAMEORIGIN");
        assert!(headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
    }
}
