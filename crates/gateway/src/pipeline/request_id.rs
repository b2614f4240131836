//! Request id and trace context: a well-formed `X-Request-Id` from the caller is kept, anything
//! else is replaced by a new one; a valid W3C `traceparent` is passed on, otherwise a new trace
//! starts here. The id is set on the response, and the pipeline holds it in a task-local so
//! every problem document carries it.

use http::{HeaderMap, HeaderName, HeaderValue};

use platform::request_id::X_REQUEST_ID;
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

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

/// Keeps the caller's well-formed id or puts a new one on the request (SPEC §6), and a valid
/// `traceparent` or a new one; returns the id.
pub fn assign(headers: &mut HeaderMap) -> String {
    let id = platform::request_id::keep_or_new(headers);
    let traceparent_ok = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).is_some_and(valid_traceparent);
    if !traceparent_ok {
        headers.remove(&TRACEPARENT);
        if let Ok(value) = HeaderValue::from_str(&new_traceparent()) {
            headers.insert(TRACEPARENT, value);
        }
    }
    // The id was checked to be visible ASCII (or generated), so it is a valid header value.
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(X_REQUEST_ID, value);
    }
    id
}

/// Sets the request's id on its answer.
pub fn answer(headers: &mut HeaderMap, id: &str) {
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(X_REQUEST_ID, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(headers: &[(&str, &str)]) -> (String, String) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let id = assign(&mut map);
        let mut answered = HeaderMap::new();
        answer(&mut answered, &id);
        let seen = |name: &HeaderName| map.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let echoed = answered[&X_REQUEST_ID].to_str().unwrap().to_owned();
        (echoed, format!("{}|{}", seen(&X_REQUEST_ID), seen(&TRACEPARENT)))
    }

    #[test]
    fn a_good_id_and_traceparent_are_kept() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (echoed, seen) = call(&[("x-request-id", "abc-123"), ("traceparent", tp)]);
        assert_eq!(echoed, "abc-123");
        assert_eq!(seen, format!("abc-123|{tp}"));
    }

    #[test]
    fn bad_ids_and_traceparents_are_replaced() {
        for bad in ["", "has space", &"x".repeat(129), "semi;colon"] {
            let (echoed, seen) = call(&[("x-request-id", bad), ("traceparent", "00-zz-00-01")]);
            assert_ne!(echoed, bad);
            assert!(platform::request_id::is_valid(&echoed));
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
