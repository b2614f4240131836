//! Client allowlists: IP networks for API keys (server to server) and browser origins for
//! API keys and SDK tokens (SPEC §4). An empty IP list allows any address; an empty origin
//! list allows no browser origin; a request without `Origin` is not origin-checked.

use std::net::IpAddr;

use ipnet::IpNet;
pub use platform::origin::{OriginPattern, origin_allowed};

use crate::error::Error;

pub const MAX_ENTRIES: usize = 100;

/// One IP allowlist entry, stored canonically (`203.0.113.0/24`, `2001:db8::/32`).
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    let text = text.trim();
    let net = text.parse::<IpNet>().ok().or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))?;
    Some(net.trunc())
}

/// Validates a request's list of CIDRs into canonical strings.
pub fn parse_ip_allowlist(field: &str, raw: &[String]) -> Result<Vec<String>, Error> {
    if raw.len() > MAX_ENTRIES {
        return Err(Error::validation(field, format!("must have at most {MAX_ENTRIES} entries")));
    }
    let mut out: Vec<String> = raw
        .iter()
        .map(|entry| {
            parse_cidr(entry)
                .map(|net| net.to_string())
                .ok_or_else(|| Error::validation(field, format!("`{entry}` is not an IPv4 or IPv6 address or CIDR")))
        })
        .collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// Validates a request's list of origins into canonical strings.
pub fn parse_origins(field: &str, raw: &[String]) -> Result<Vec<String>, Error> {
    if raw.len() > MAX_ENTRIES {
        return Err(Error::validation(field, format!("must have at most {MAX_ENTRIES} entries")));
    }
    let mut out: Vec<String> = raw
        .iter()
        .map(|entry| {
            OriginPattern::parse(entry).map(|o| o.to_string()).ok_or_else(|| {
                Error::validation(
                    field,
                    format!("`{entry}` is not an origin (scheme://host[:port], or https://*.example.com)"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether `ip` may use a key of a client with this allowlist (IPv4-mapped IPv6 addresses
/// match their IPv4 entries).
pub fn ip_allowed(allowlist: &[String], ip: IpAddr) -> bool {
    if allowlist.is_empty() {
        return true;
    }
    let ip = platform::net::canonical(ip);
    allowlist.iter().filter_map(|e| parse_cidr(e)).any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ip_table() {
        let list = parse_ip_allowlist(
            "ip_allowlist",
            &["203.0.113.0/24".into(), "2001:db8::/32".into(), "198.51.100.7".into()],
        )
        .unwrap();
        for (addr, allowed) in [
            ("203.0.113.9", true),
            ("203.0.114.1", false),
            ("198.51.100.7", true),
            ("198.51.100.8", false),
            ("2001:db8:1::5", true),
            ("2001:db9::1", false),
            ("::ffff:203.0.113.77", true),
            ("::ffff:192.0.2.1", false),
        ] {
            assert_eq!(ip_allowed(&list, ip(addr)), allowed, "{addr}");
        }
        assert!(ip_allowed(&[], ip("192.0.2.1")), "an empty list allows any IP");
        assert_eq!(parse_ip_allowlist("f", &["10.1.2.3/8".into()]).unwrap(), vec!["10.0.0.0/8"]);
        for bad in ["10.0.0.0/33", "nope", "10.0.0", "::/129", ""] {
            assert!(parse_ip_allowlist("f", &[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn origin_table() {
        let allowed = parse_origins(
            "allowed_origins",
            &["https://app.example.com".into(), "https://*.example.org".into(), "http://localhost:3000".into()],
        )
        .unwrap();
        for (origin, ok) in [
            ("https://app.example.com", true),
            ("https://APP.example.com", true),
            ("https://app.example.com:443", true),
            ("http://app.example.com", false),
            ("https://app.example.com:8443", false),
            ("https://example.com", false),
            ("https://app.example.com.evil.com", false),
            ("https://evilapp.example.com", false),
            ("https://a.example.org", true),
            ("https://a.b.example.org", true),
            ("https://example.org", false),
            ("https://badexample.org", false),
            ("https://example.org.evil.net", false),
            ("http://a.example.org", false),
            ("http://localhost:3000", true),
            ("http://localhost:3001", false),
            ("null", false),
            ("", false),
            ("https://user@app.example.com", false),
        ] {
            assert_eq!(origin_allowed(&allowed, origin), ok, "{origin}");
        }
        assert!(!origin_allowed(&[], "https://app.example.com"), "an empty list allows no origin");
    }

    #[test]
    fn refused_origin_entries() {
        for bad in [
            "null",
            "https://example.com/",
            "https://example.com/path",
            "https://user:pw@example.com",
            "ftp://example.com",
            "example.com",
            "https://*.com",
            "http://*.example.com",
            "https://*example.com",
            "https://ex ample.com",
            "https://example.com?x=1",
            "https://example.com:0",
            "https://exämple.com",
            "https://*",
        ] {
            assert!(parse_origins("allowed_origins", &[bad.into()]).is_err(), "{bad} accepted");
        }
        assert_eq!(
            parse_origins("f", &["HTTPS://App.Example.com:443".into()]).unwrap(),
            vec!["https://app.example.com"]
        );
    }
}
