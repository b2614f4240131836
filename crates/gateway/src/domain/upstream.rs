//! [`Upstream`]: an absolute `http`/`https` URL the gateway forwards to (route and webhook
//! upstreams, and the auth and socket services' addresses).

use std::{fmt, str::FromStr, sync::Arc};

use http::{Uri, uri::PathAndQuery};

/// An `http://` or `https://` URL with a host, no userinfo, no query and no fragment. A path
/// is kept as a base that forwarded paths are appended to (`http://svc:9001/api` sends
/// `/v1/user/orders` to `/api/v1/user/orders`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    uri: Uri,
    /// `scheme://authority`, kept because the proxy keys its breakers and connections by it
    /// per request.
    origin: Arc<str>,
    /// The path without a trailing slash; empty for the root.
    base_path: String,
}

impl Upstream {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        // Checked on the raw text too: `Uri` would otherwise drop a fragment silently, and a
        // query on a base URL has no sensible meaning once request queries are appended.
        if text.contains('#') {
            return Err(format!("`{text}` must not have a fragment"));
        }
        if text.contains('?') {
            return Err(format!("`{text}` must not have a query"));
        }
        let uri = Uri::from_str(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http" | "https") => {}
            Some(other) => return Err(format!("`{text}` has scheme `{other}`; use http or https")),
            None => return Err(format!("`{text}` is not absolute (use http://host[:port][/path])")),
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("`{text}` has no host"));
        };
        // Credentials in a URL end up in logs and in every forwarded request's target.
        if authority.as_str().contains('@') {
            return Err("must not contain a user name or password".to_owned());
        }
        if authority.host().is_empty() {
            return Err(format!("`{text}` has no host"));
        }
        if authority.port_u16() == Some(0) {
            return Err(format!("`{text}` has port 0"));
        }
        let path = uri.path();
        if path.split('/').any(|segment| segment == "." || segment == "..") {
            return Err(format!("`{text}` must not contain `.` or `..` path segments"));
        }
        let base_path = path.trim_end_matches('/').to_owned();
        let scheme = if uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("https")) { "https" } else { "http" };
        let origin = Arc::from(format!("{scheme}://{}", authority.as_str()));
        Ok(Self { uri, origin, base_path })
    }

    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    pub fn is_https(&self) -> bool {
        self.uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("https"))
    }

    /// The host as written, an IPv6 literal in brackets.
    pub fn host(&self) -> &str {
        self.uri.host().unwrap_or_default()
    }

    /// The explicit port, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.uri.port_u16().unwrap_or(if self.is_https() { 443 } else { 80 })
    }

    /// `scheme://authority`, without the base path.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// [`Self::origin`], shared.
    pub fn shared_origin(&self) -> &Arc<str> {
        &self.origin
    }

    /// The authority (`host[:port]`), for a request that came without `Host`.
    pub fn authority(&self) -> &str {
        self.uri.authority().map_or("", http::uri::Authority::as_str)
    }

    /// The base path without a trailing slash; empty when the URL has none.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The URL a request for `path_and_query` (starting with `/`) is sent to.
    pub fn join(&self, path_and_query: &str) -> String {
        format!("{}{}{}", self.origin(), self.base_path, path_and_query)
    }

    /// The request target (origin form, RFC 9112 §3.2.1: the base path and `path_and_query`)
    /// of a request for `path_and_query` (starting with `/`) sent over a connection to this
    /// upstream; `None` unless `path_and_query` starts with `/` and is valid.
    pub fn request_target(&self, path_and_query: &str) -> Option<Uri> {
        if !path_and_query.starts_with('/') {
            return None;
        }
        let path_and_query = if self.base_path.is_empty() {
            PathAndQuery::from_str(path_and_query).ok()?
        } else {
            PathAndQuery::try_from(format!("{}{path_and_query}", self.base_path)).ok()?
        };
        Some(Uri::from(path_and_query))
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.base_path)
    }
}

impl FromStr for Upstream {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https_with_a_host() {
        let plain = Upstream::parse("http://127.0.0.1:9001").unwrap();
        assert_eq!(plain.host(), "127.0.0.1");
        assert_eq!(plain.port(), 9001);
        assert_eq!(plain.base_path(), "");
        assert_eq!(plain.join("/v1/user/orders?x=1"), "http://127.0.0.1:9001/v1/user/orders?x=1");

        let based = Upstream::parse("https://hooks.internal/hooks/meta/").unwrap();
        assert!(based.is_https());
        assert_eq!(based.port(), 443);
        assert_eq!(based.base_path(), "/hooks/meta");
        assert_eq!(based.to_string(), "https://hooks.internal/hooks/meta");
        assert_eq!(based.join("/x"), "https://hooks.internal/hooks/meta/x");

        assert_eq!(Upstream::parse("HTTP://[::1]:80").unwrap().host(), "[::1]");

        // The proxy's per-request target is the joined text's path and query.
        for (upstream, path) in [
            (&plain, "/v1/user/orders?x=1"),
            (&plain, "/"),
            (&based, "/x?a=%20b"),
            (&Upstream::parse("HTTP://[::1]:80").unwrap(), "/v1/a"),
        ] {
            let joined: Uri = upstream.join(path).parse().unwrap();
            let target = upstream.request_target(path).unwrap();
            assert_eq!(
                Some(target.to_string().as_str()),
                joined.path_and_query().map(|pq| pq.as_str()),
                "{upstream} {path}"
            );
            assert!(target.scheme().is_none() && target.authority().is_none());
        }
        assert_eq!(plain.request_target("v1/user"), None);
        assert_eq!(plain.request_target("/a b"), None);
        assert_eq!(plain.authority(), "127.0.0.1:9001");
    }

    #[test]
    fn refuses_what_cannot_be_forwarded_to() {
        for bad in [
            "",
            "127.0.0.1:9001",
            "/relative",
            "ftp://host",
            "grpc://host:50051",
            "http://user:pw@host",
            "http://user@host",
            "http://host/?a=1",
            "http://host/#frag",
            "http://host:0",
            "http://host/a/../b",
            "http://",
            "http://ho st",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
