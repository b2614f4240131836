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
    let b = value.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |s: &[u8]| s.iter().any(|&c| c != b'0');
    b.len() == 55
        && (b[2], b[35], b[52]) == (b'-', b'-', b'-')
        && hex(&b[..2])
        && &b[..2] != b"ff"
        && hex(&b[3..35])
        && nonzero(&b[3..35])
        && hex(&b[36..52])
        && nonzero(&b[36..52])
        && hex(&b[53..])
}

/// A new `traceparent` (`00-<trace id>-<parent id>-01`), written on the stack.
fn new_traceparent() -> HeaderValue {
    let mut text = [0u8; 55];
    text[..3].copy_from_slice(b"00-");
    uuid::Uuid::new_v4().simple().encode_lower(&mut text[3..35]);
    text[35] = b'-';
    let mut parent = [0u8; 32];
    uuid::Uuid::new_v4().simple().encode_lower(&mut parent);
    text[36..52].copy_from_slice(&parent[..16]);
    text[52..].copy_from_slice(b"-01");
    // Lower-case hex and dashes only: always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Keeps the caller's well-formed id or puts a new one on the request (SPEC §6), and a valid
/// `traceparent` or a new one; returns the id.
pub fn assign(headers: &mut HeaderMap) -> String {
    let id = platform::request_id::keep_or_new(headers);
    let traceparent_ok = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).is_some_and(valid_traceparent);
    if !traceparent_ok {
        headers.insert(TRACEPARENT, new_traceparent());
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
        assert!(!valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00"));
        assert!(!valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01"));
        assert!(!valid_traceparent("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"));
        assert!(!valid_traceparent(""));
        assert!(valid_traceparent(new_traceparent().to_str().unwrap()));
    }
}
