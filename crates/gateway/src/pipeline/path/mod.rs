//! Sanitising, before routing: every client-supplied context header (`X-User-Id`,
//! `X-Auth-Kind`, …) is removed, and the path is brought to SPEC §6's normal form, which is
//! what the routers match and what the proxy forwards and signs, so a decoding upstream cannot
//! read a request as another route than the gateway chose. A path that different parsers could
//! read differently is refused with 400 `malformed_path`.

use std::borrow::Cow;

use auth_contract::headers::strip_context_headers;
use http::{Uri, uri::PathAndQuery};

use crate::error::GatewayError;

/// Why a path is refused with 400 `malformed_path`.
pub type PathRefusal = &'static str;

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3's unreserved characters other than `.`: these are decoded.
fn decodes(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~')
}

/// Encoded characters a decoding server would read as structure (a separator, a dot, a
/// parameter, a second round of decoding), or that no path should carry.
fn refused_encoded(byte: u8) -> bool {
    matches!(byte, b'/' | b'\\' | b'.' | b'%' | b';') || byte.is_ascii_control()
}

fn push_encoded(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xF)]]);
}

/// SPEC §6's normal form of a request path: `%XX` of an unreserved character other than `.`
/// is decoded and every other accepted `%XX` kept with upper-case hex (raw non-ASCII bytes
/// are encoded the same way); an encoded `/`, `\`, `.`, `%`, `;` or control character, a raw
/// `\`, `;` or control character, a malformed `%`, and empty, `.` or `..` segments are
/// refused. One trailing `/` is kept: it names no segment. Borrowed when the path is already
/// in normal form, the common case.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathRefusal> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err("the path must start with /");
    }
    // Bytes up to `copied` are in `out` already (once anything had to change).
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let (replacement, width): (Option<u8>, usize) = if byte == b'%' {
            let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex_value), bytes.get(i + 2).copied().and_then(hex_value))
            else {
                return Err("the path has a malformed percent-encoding");
            };
            let value = hi << 4 | lo;
            if refused_encoded(value) {
                return Err("the path has an encoded separator, dot, percent sign, semicolon or control character");
            }
            let lower_hex = bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase);
            (if decodes(value) || lower_hex { Some(value) } else { None }, 3)
        } else if byte == b'\\' || byte == b';' || byte.is_ascii_control() {
            return Err("the path has a backslash, semicolon or control character");
        } else {
            (if byte.is_ascii() { None } else { Some(byte) }, 1)
        };
        if let Some(value) = replacement {
            let out = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
            out.extend_from_slice(&bytes[copied..i]);
            if decodes(value) {
                out.push(value);
            } else {
                push_encoded(out, value);
            }
            copied = i + width;
        }
        i += width;
    }
    let normal = match out {
        None => Cow::Borrowed(path),
        Some(mut out) => {
            out.extend_from_slice(&bytes[copied..]);
            // Only ASCII was written: copied runs hold no byte above 0x7F.
            Cow::Owned(String::from_utf8(out).map_err(|_| "the path is not UTF-8")?)
        }
    };
    let inner = normal.strip_prefix('/').unwrap_or_default();
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    let empty_root = inner.is_empty() && normal.len() > 1;
    if empty_root || (!inner.is_empty() && inner.split('/').any(|s| s.is_empty() || s == "." || s == "..")) {
        return Err("the path has an empty, `.` or `..` segment");
    }
    Ok(normal)
}

/// Drops client-supplied context headers and brings the request's path to its normal form,
/// which every later stage routes, forwards and signs.
pub fn normalise_request<B>(request: &mut http::Request<B>) -> Result<(), GatewayError> {
    strip_context_headers(request.headers_mut());
    let normal = match normalise(request.uri().path()) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(normal)) => normal,
        Err(reason) => return Err(GatewayError::MalformedPath(reason)),
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let unusable = || GatewayError::MalformedPath("the path cannot be normalised");
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).map_err(|_| unusable())?);
    *request.uri_mut() = Uri::from_parts(parts).map_err(|_| unusable())?;
    Ok(())
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_forms() {
        for (path, normal) in [
            ("/", "/"),
            ("/v1/user/orders", "/v1/user/orders"),
            ("/v1/user/orders/", "/v1/user/orders/"),
            ("/v1/user/%6F%72ders", "/v1/user/orders"),
            ("/v1/user/a%2bb%40c", "/v1/user/a%2Bb%40c"),
            ("/v1/user/a%20b", "/v1/user/a%20b"),
            ("/v1/user/.well", "/v1/user/.well"),
            ("/v1/user/%7e%2D%5F", "/v1/user/~-_"),
        ] {
            assert_eq!(normalise(path).as_deref(), Ok(normal), "{path}");
        }
        assert!(matches!(normalise("/v1/user/orders"), Ok(Cow::Borrowed(_))));
        for path in [
            "",
            "v1/user",
            "/v1/user/../admin",
            "/v1/user/./x",
            "/v1//user",
            "//",
            "/v1/user//",
            "/v1/user/%2e%2e/admin",
            "/v1/user%2Fadmin",
            "/v1/user%5cadmin",
            "/v1/a\\b",
            "/v1/%00",
            "/v1/%25",
            "/v1/a;b",
            "/v1/a%3Bb",
            "/v1/a%",
            "/v1/a%4",
            "/v1/a%g0",
        ] {
            assert!(normalise(path).is_err(), "{path}");
        }
    }

    #[test]
    fn context_headers_never_reach_the_inner_service() {
        let mut request = http::Request::builder()
            .uri("/v1/user/x")
            .header("x-user-id", "admin")
            .header("X-Auth-Kind", "service")
            .header("x-context-signature", "v1=00")
            .header("x-scopes", "*")
            .header("x-kept", "1")
            .body(())
            .unwrap();
        normalise_request(&mut request).unwrap();
        let names: Vec<&str> = request.headers().keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
        let mut request = http::Request::builder().uri("/v1/user/../admin").body(()).unwrap();
        assert_eq!(normalise_request(&mut request).unwrap_err().status(), 400);
    }

    const ROUTES: &str = "[[routes]]\nprefix = \"/v1/user\"\nupstream = \"http://127.0.0.1:9001\"\n\n\
         [[routes]]\nprefix = \"/v1/user/orders\"\nupstream = \"http://127.0.0.1:9002\"\n\n\
         [[routes]]\nprefix = \"/v1/public\"\nupstream = \"http://127.0.0.1:9003\"\nauth = [\"none\"]\n\n\
         [[routes]]\nprefix = \"/v1/public/admin\"\nupstream = \"http://127.0.0.1:9004\"\nauth = [\"user\"]\n";

    /// The route chosen and the URI the proxy would forward and sign: the real normaliser
    /// and route table; a refusal gives its status and problem body.
    fn send(table: &crate::routing::RouteTable, path: &str) -> (u16, String) {
        let mut request = http::Request::builder().uri(path).body(()).unwrap();
        let routed = normalise_request(&mut request).and_then(|()| table.find(request.uri().path()));
        match routed {
            Ok(m) => (200, format!("{} {}", m.policy.prefix, request.uri())),
            Err(err) => (err.status().as_u16(), format!("\"code\":\"{}\"", err.code())),
        }
    }

    fn routed_app() -> crate::routing::RouteTable {
        crate::config::routes::RoutesFile::parse(ROUTES).unwrap().routes
    }

    #[test]
    fn paths_are_routed_forwarded_and_signed_in_their_normalised_form() {
        let app = routed_app();
        for (path, expected) in [
            ("/v1/user/%6Frders/7", "/v1/user/orders /v1/user/orders/7"),
            ("/v1/user/%6frders/7?q=%6F;x", "/v1/user/orders /v1/user/orders/7?q=%6F;x"),
            ("/v1/public/%61dmin", "/v1/public/admin /v1/public/admin"),
            ("/v1/user/a%40b%2b", "/v1/user /v1/user/a%40b%2B"),
            ("/v1/user/caf%c3%a9", "/v1/user /v1/user/caf%C3%A9"),
            ("/v1/user/orders/", "/v1/user/orders /v1/user/orders/"),
            ("/v1/user/%7Eme", "/v1/user /v1/user/~me"),
        ] {
            assert_eq!(send(&app, path), (200, expected.to_owned()), "{path}");
        }
    }

    #[test]
    fn paths_a_decoding_server_could_read_otherwise_are_malformed() {
        let app = routed_app();
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
            let (status, body) = send(&app, path);
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains("\"code\":\"malformed_path\""), "{path}: {body}");
        }
    }

    #[tokio::test]
    async fn built_in_routes_are_chosen_on_the_normalised_path() {
        use tower::ServiceExt as _;
        let app = crate::app::router(crate::app::test_gateway("").await);
        let status = |path: &'static str| {
            let app = app.clone();
            async move {
                let request = http::Request::builder().uri(path).body(axum::body::Body::empty()).unwrap();
                app.oneshot(request).await.unwrap().status().as_u16()
            }
        };
        // The auth service's address answers nothing: a forwarded request is a 503, not a 404.
        assert_eq!(status("/v1/%61uth/login").await, 503);
        assert_eq!(status("/v1/%61uth/internal/validate").await, 404);
        assert_eq!(status("/v1/auth/%69nternal/validate").await, 404);
    }
}
