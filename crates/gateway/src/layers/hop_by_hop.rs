//! The client's hop-by-hop headers and every header its `Connection` names are removed
//! before any layer adds a header of the gateway's own (`X-Request-Id`, `traceparent`,
//! `X-Forwarded-*`, the signed context), so a client can remove none of them (SPEC §6). A
//! WebSocket handshake is remembered in the request's extensions, for the routes that pass
//! it on.

use axum::{extract::Request, middleware::Next, response::Response};

pub async fn layer(mut request: Request, next: Next) -> Response {
    let (method, headers) = (request.method().clone(), request.headers_mut());
    if let Some(websocket) = crate::proxy::strip_incoming(&method, headers) {
        request.extensions_mut().insert(websocket);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, routing::any};
    use tower::ServiceExt;

    use super::*;
    use crate::proxy::WebSocketRequest;

    #[tokio::test]
    async fn connection_named_and_hop_by_hop_headers_are_gone_and_websocket_is_remembered() {
        let app = Router::new()
            .fallback(any(|request: Request| async move {
                let mut names: Vec<String> = request.headers().keys().map(|k| k.as_str().to_owned()).collect();
                names.sort();
                let websocket = request.extensions().get::<WebSocketRequest>().is_some();
                format!("{} {websocket}", names.join(","))
            }))
            .layer(axum::middleware::from_fn(layer));
        let send = |request: Request| {
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.unwrap();
                String::from_utf8(axum::body::to_bytes(response.into_body(), 1024).await.unwrap().to_vec()).unwrap()
            }
        };
        let request = Request::builder()
            .uri("/v1/x")
            .header("connection", "x-forwarded-for, X-Kept-Not")
            .header("x-forwarded-for", "1.2.3.4")
            .header("x-kept-not", "1")
            .header("te", "trailers")
            .header("keep-alive", "timeout=5")
            .header("x-kept", "1")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(request).await, "x-kept false");
        let handshake = Request::builder()
            .uri("/v1/socket")
            .header("connection", "Upgrade")
            .header("upgrade", "WebSocket")
            .header("sec-websocket-key", "k")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(handshake).await, "sec-websocket-key true");
        let other = Request::builder()
            .uri("/v1/x")
            .header("connection", "upgrade")
            .header("upgrade", "h2c")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(other).await, " false");
    }
}
