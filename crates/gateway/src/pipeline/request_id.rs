//! Request id and trace context (SPEC §6): a well-formed `X-Request-Id` from the caller is
//! kept, anything else is replaced by a new one; a valid W3C `traceparent` is continued only
//! from a trusted proxy, otherwise a new trace starts here (linked to the caller's while spans
//! are exported). The id is set on the response, and the pipeline holds it in a task-local so
//! every problem document carries it.

use http::{HeaderMap, HeaderValue};
use platform::{
    otel::{self, TRACEPARENT},
    request_id::X_REQUEST_ID,
};
use tracing::Span;

/// Keeps the caller's well-formed id or puts a new one on the request, and decides its trace:
/// the request's span (opened only while spans are exported) continues a `trusted` caller's
/// `traceparent` or starts a new trace linked to an untrusted one, and the `traceparent` the
/// request carries on names that span (or, with no span, the trusted caller's trace or a new
/// one). `trusted` says whether the caller is a trusted proxy; it is asked only of a request
/// that brings a `traceparent`. Returns the id and the span.
pub fn assign(headers: &mut HeaderMap, trusted: impl FnOnce() -> bool) -> (String, Span) {
    let id = platform::request_id::keep_or_new(headers);
    let caller =
        headers.get(&TRACEPARENT).filter(|v| v.to_str().ok().and_then(otel::parse_traceparent).is_some()).cloned();
    let trusted = caller.is_some() && trusted();
    let span = if otel::exporting() {
        let span = tracing::info_span!(
            target: "gateway::request",
            parent: None,
            "request",
            otel.kind = "server",
            portcullis.component = "gateway",
            request_id = %id,
            http.response.status_code = tracing::field::Empty,
        );
        otel::continue_trace(&span, caller.as_ref(), trusted);
        span
    } else {
        Span::none()
    };
    match (otel::traceparent_of(&span), caller) {
        (Some(value), _) => {
            headers.insert(TRACEPARENT, value);
        }
        (None, Some(_)) if trusted => {}
        (None, _) => {
            headers.insert(TRACEPARENT, otel::new_traceparent());
        }
    }
    // The id was checked to be visible ASCII (or generated), so it is a valid header value.
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(X_REQUEST_ID, value);
    }
    (id, span)
}

/// Sets the request's id on its answer, and its status on its span.
pub fn answer(headers: &mut HeaderMap, id: &str, span: &Span, status: http::StatusCode) {
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(X_REQUEST_ID, value);
    }
    if !span.is_none() {
        span.record("http.response.status_code", status.as_u16());
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderName;

    use super::*;

    fn call(headers: &[(&str, &str)], trusted: bool) -> (String, String) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let (id, span) = assign(&mut map, || trusted);
        let mut answered = HeaderMap::new();
        answer(&mut answered, &id, &span, http::StatusCode::OK);
        let seen = |name: &HeaderName| map.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let echoed = answered[&X_REQUEST_ID].to_str().unwrap().to_owned();
        (echoed, format!("{}|{}", seen(&X_REQUEST_ID), seen(&TRACEPARENT)))
    }

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_good_id_is_kept_and_a_trusted_callers_traceparent_too() {
        let (echoed, seen) = call(&[("x-request-id", "abc-123"), ("traceparent", CALLER)], true);
        assert_eq!(echoed, "abc-123");
        assert_eq!(seen, format!("abc-123|{CALLER}"));
    }

    #[test]
    fn an_untrusted_callers_traceparent_is_replaced_by_a_new_trace() {
        let (_, seen) = call(&[("traceparent", CALLER)], false);
        let (_, traceparent) = seen.split_once('|').unwrap();
        let new = otel::parse_traceparent(traceparent).unwrap();
        assert_ne!(new.trace_id(), otel::parse_traceparent(CALLER).unwrap().trace_id());
    }

    #[test]
    fn bad_ids_and_traceparents_are_replaced() {
        for bad in ["", "has space", &"x".repeat(129), "semi;colon"] {
            let (echoed, seen) = call(&[("x-request-id", bad), ("traceparent", "00-zz-00-01")], true);
            assert_ne!(echoed, bad);
            assert!(platform::request_id::is_valid(&echoed));
            let (id, tp) = seen.split_once('|').unwrap();
            assert_eq!(id, echoed);
            assert!(otel::parse_traceparent(tp).is_some(), "{tp}");
        }
    }
}
