//! Request id and trace context: a well-formed `X-Request-Id` from the caller is kept, anything
//! else is replaced by a new one; a valid W3C `traceparent` is passed on, otherwise a new trace
//! starts here. The id is set on the response, kept in the request's extensions, and held in a
//! task-local so every problem document carries it.

use axum::{extract::Request, middleware::Next, response::Response};
use http::{HeaderName, HeaderValue};

use crate::error::REQUEST_ID;

pub use platform::request_id::{X_REQUEST_ID, is_valid as valid_request_id};
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The request's id, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, with non-zero ids (W3C Trace
/// Context §3.2).
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if hex(version, 2) && *version != "ff" && hex(trace, 32) && hex(parent, 16) && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0') && parent.bytes().any(|b| b != b'0'))
}

fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let parent = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{parent}-01")
}

pub async fn layer(mut request: Request, next: Next) -> Response {
    let headers = request.headers_mut();
    let id = platform::request_id::keep_or_new(headers);
    let traceparent_ok = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).is_some_and(valid_traceparent);
    if !traceparent_ok {
        headers.remove(&TRACEPARENT);
        if let Ok(value) = HeaderValue::from_str(&new_traceparent()) {
            headers.insert(TRACEPARENT, value);
        }
    }
    // The id was checked to be visible ASCII (or generated), so it is a valid header value.
    let value = HeaderValue::from_str(&id).ok();
    if let Some(value) = &value {
        request.headers_mut().insert(X_REQUEST_ID, value.clone());
    }
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Some(value) = value {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    // For the access log, which wraps this layer.
    response.extensions_mut().insert(RequestId(id));
    response
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, routing::get};
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        Router::new()
            .route(
                "/",
                get(|request: Request| async move {
                    let h = request.headers();
                    format!(
                        "{}|{}",
                        h.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default(),
                        h.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).unwrap_or_default()
                    )
                }),
            )
            .layer(axum::middleware::from_fn(layer))
    }

    async fn call(headers: &[(&str, &str)]) -> (String, String) {
        let mut request = Request::builder().uri("/");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = app().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let echoed = response.headers().get(&X_REQUEST_ID).unwrap().to_str().unwrap().to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        (echoed, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_good_id_and_traceparent_are_kept() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (echoed, seen) = call(&[("x-request-id", "abc-123"), ("traceparent", tp)]).await;
        assert_eq!(echoed, "abc-123");
        assert_eq!(seen, format!("abc-123|{tp}"));
    }

    #[tokio::test]
    async fn bad_ids_and_traceparents_are_replaced() {
        for bad in ["", "has space", &"x".repeat(129), "semi;colon"] {
            let (echoed, seen) = call(&[("x-request-id", bad), ("traceparent", "00-zz-00-01")]).await;
            assert_ne!(echoed, bad);
            assert!(valid_request_id(&echoed));
            let (id, tp) = seen.split_once('|').unwrap();
            assert_eq!(id, echoed);
            assert!(valid_traceparent(tp), "{tp}");
        }
    }

    #[test]
    fn traceparent_rules() {
        assert!(valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!valid_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
        assert!(!valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
        assert!(!valid_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!valid_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
        assert!(valid_traceparent(&new_traceparent()));
    }
}
