//! [`Origin`]: an exact browser origin (`scheme://host[:port]`), canonicalised so that one
//! origin has one spelling. Every service parses origins here (the gateway's `CORS_ORIGIN`,
//! the auth service's client allowlists and the `Origin` of requests), so they agree on what
//! an origin is; origins compare by equality, so no suffix trick widens one.

use std::{fmt, net::Ipv6Addr, str::FromStr};

/// A canonical origin: lowercase scheme and host, the scheme's default port dropped, so
/// `HTTPS://App.Example.com:443` and `https://app.example.com` are the same origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin(String);

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// DNS names (labels of letters, digits and inner hyphens) and IPv4 literals, which satisfy
/// the same rule.
fn valid_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl Origin {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let invalid = || format!("`{text}` is not an origin (scheme://host[:port], no path)");
        let (scheme, rest) = text.split_once("://").ok_or_else(invalid)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("`{text}` must use http or https"));
        }
        if rest.contains(['/', '?', '#', '@', '\\', ' ', '*']) {
            return Err(invalid());
        }
        let (host, port) = if let Some(after_bracket) = rest.strip_prefix('[') {
            let (literal, tail) = after_bracket.split_once(']').ok_or_else(invalid)?;
            literal.parse::<Ipv6Addr>().map_err(|_| invalid())?;
            let port = match tail {
                "" => None,
                _ => Some(tail.strip_prefix(':').ok_or_else(invalid)?),
            };
            (format!("[{}]", literal.to_ascii_lowercase()), port)
        } else {
            let (host, port) = match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            };
            if !valid_name(host) {
                return Err(invalid());
            }
            (host.to_ascii_lowercase(), port)
        };
        let port = match port {
            None => None,
            Some(digits) => Some(digits.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(invalid)?),
        };
        Ok(Self(match port.filter(|p| *p != default_port(&scheme)) {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.0.split_once("://").map_or("", |(scheme, _)| scheme)
    }

    fn authority(&self) -> &str {
        self.0.split_once("://").map_or("", |(_, rest)| rest)
    }

    /// The lowercase host (an IPv6 literal keeps its brackets), without the port.
    pub fn host(&self) -> &str {
        let authority = self.authority();
        match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => &authority[..i],
            _ => authority,
        }
    }

    /// The port when it is not the scheme's default.
    pub fn port(&self) -> Option<u16> {
        let authority = self.authority();
        match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => authority[i + 1..].parse().ok(),
            _ => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Origin {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

/// An allowed origin: exact `scheme://host[:port]`, or `https://*.example.com` matching
/// subdomains only (never the apex). Both halves parse with the shared [`Origin`] rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    /// For a wildcard, the origin of the suffix after `*.`.
    origin: Origin,
    wildcard: bool,
}

/// An IPv4 literal (digits and dots only) cannot take a subdomain wildcard.
fn is_ipv4_literal(host: &str) -> bool {
    host.chars().all(|c| c.is_ascii_digit() || c == '.')
}

impl OriginPattern {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Some((scheme, rest)) = text.split_once("://")
            && let Some(suffix) = rest.strip_prefix("*.")
        {
            let origin = Origin::parse(&format!("{scheme}://{suffix}")).ok()?;
            // Wildcards need HTTPS and a registrable-looking suffix (at least two labels).
            let host = origin.host();
            let usable =
                origin.scheme() == "https" && host.contains('.') && !host.starts_with('[') && !is_ipv4_literal(host);
            return usable.then_some(Self { origin, wildcard: true });
        }
        Origin::parse(text).ok().map(|origin| Self { origin, wildcard: false })
    }

    pub fn matches(&self, request: &Origin) -> bool {
        if !self.wildcard {
            return self.origin == *request;
        }
        self.origin.scheme() == request.scheme()
            && self.origin.port() == request.port()
            && request
                .host()
                .strip_suffix(self.origin.host())
                .and_then(|label| label.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty())
    }
}

impl std::fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            let rest = self.origin.as_str().split_once("://").map_or("", |(_, rest)| rest);
            write!(f, "{}://*.{rest}", self.origin.scheme())
        } else {
            f.write_str(self.origin.as_str())
        }
    }
}

/// Whether a browser at `origin` may use a credential of a client with these origins.
pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    let Ok(origin) = Origin::parse(origin) else {
        return false;
    };
    allowed.iter().filter_map(|p| OriginPattern::parse(p)).any(|p| p.matches(&origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_compare_equal() {
        let o = |s: &str| Origin::parse(s).unwrap();
        assert_eq!(o("HTTPS://App.Example.com:443"), o("https://app.example.com"));
        assert_eq!(o("http://localhost:80").as_str(), "http://localhost");
        assert_eq!(o("http://localhost:3000").as_str(), "http://localhost:3000");
        assert_eq!(o("http://127.0.0.1:5173").as_str(), "http://127.0.0.1:5173");
        assert_eq!(o("http://[::1]:8080").as_str(), "http://[::1]:8080");
        assert_ne!(o("http://app.example.com"), o("https://app.example.com"));
    }

    #[test]
    fn parts() {
        let o = |s: &str| Origin::parse(s).unwrap();
        let a = o("HTTPS://App.Example.com:8443");
        assert_eq!((a.scheme(), a.host(), a.port()), ("https", "app.example.com", Some(8443)));
        let b = o("http://[::1]:8080");
        assert_eq!((b.host(), b.port()), ("[::1]", Some(8080)));
        let c = o("https://example.com:443");
        assert_eq!((c.host(), c.port()), ("example.com", None));
        let d = o("http://[::1]");
        assert_eq!((d.host(), d.port()), ("[::1]", None));
    }

    #[test]
    fn refuses_anything_but_an_exact_origin() {
        for bad in [
            "",
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://*.example.com",
            "https://user@app.example.com",
            "https://app.example.com:0",
            "https://app.example.com:99999",
            "https://app.example.com:",
            "https://-bad.example.com",
            "https://app..example.com",
            "https://[::1",
            "https://[nope]",
            "null",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
