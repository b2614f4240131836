//! Client IP resolution: the TCP peer, or the `X-Forwarded-For` chain only when the peer is a
//! trusted proxy, so a client cannot choose its own address.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use crate::env::ConfigError;

/// The networks whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`, comma-separated CIDRs
/// or bare addresses).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn parse(variable: &str, raw: Option<&str>) -> Result<Self, ConfigError> {
        let Some(raw) = raw else {
            return Ok(Self::default());
        };
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| ConfigError::new(variable, format!("`{item}` is not an IP or CIDR")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Loopback added (the all-in-one binary's own gateway forwards from this machine).
    pub fn with_loopback(mut self) -> Self {
        for net in ["127.0.0.0/8", "::1/128"] {
            if let Ok(net) = net.parse::<IpNet>()
                && !self.0.contains(&net)
            {
                self.0.push(net);
            }
        }
        self
    }

    /// Whether nothing is trusted (every `X-Forwarded-For` is ignored).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client address of a request from `peer`, reading every `X-Forwarded-For` line as
    /// one list (RFC 9110 §5.3). The one reader every service uses.
    pub fn client_ip_from_headers(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut lines = headers.get_all(X_FORWARDED_FOR).iter();
        let Some(first) = lines.next() else {
            return self.client_ip(peer, None);
        };
        let Some(second) = lines.next() else {
            // One line, the common case: no copy.
            return self.client_ip(peer, first.to_str().ok());
        };
        let mut joined = String::new();
        for line in [first, second].into_iter().chain(lines) {
            // A line that is not text cannot be read: the chain ends at the hop before it.
            let Ok(text) = line.to_str() else { return self.client_ip(peer, Some("garbage")) };
            if !joined.is_empty() {
                joined.push(',');
            }
            joined.push_str(text);
        }
        self.client_ip(peer, Some(&joined))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address: walking `X-Forwarded-For` from the right, the first hop that is not
    /// a trusted proxy; the peer itself when the peer is not trusted or the header is absent or
    /// malformed.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let Some(header) = forwarded_for else {
            return peer;
        };
        let mut candidate = peer;
        for hop in header.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    candidate = canonical(ip);
                    if !self.contains(candidate) {
                        return candidate;
                    }
                }
                Err(_) => return candidate,
            }
        }
        candidate
    }
}

/// The header a proxy names the client in.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// IPv4-mapped IPv6 addresses (`::ffff:203.0.113.7`) are the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The address an IP limit counts under: an IPv4 address itself, an IPv6 address by its
/// /64 (SPEC §6), since one host routinely holds a whole /64 and could otherwise rotate
/// through fresh addresses for free.
pub fn limit_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
        }
    }
}

/// Whether the peer is this machine.
pub fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// An IP address as text, written on the stack: what the gateway puts in `X-Forwarded-For`
/// and its access line for every request, without a `format!` or an allocation (the longest
/// form, an IPv4-mapped IPv6 address, is 45 bytes).
#[derive(Clone, Copy)]
pub struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    pub fn new(ip: IpAddr) -> Self {
        let mut text = Self { buf: [0; 45], len: 0 };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    let mut digits = itoa::Buffer::new();
                    for &digit in digits.format(octet).as_bytes() {
                        text.push(digit);
                    }
                }
            }
            IpAddr::V6(v6) => {
                use std::io::Write as _;
                let mut rest = &mut text.buf[..];
                // 45 bytes hold every IPv6 form, so the write cannot run out of room.
                let _ = write!(rest, "{v6}");
                let left = rest.len();
                text.len = text.buf.len() - left;
            }
        }
        text
    }

    fn push(&mut self, byte: u8) {
        self.buf[self.len] = byte;
        self.len += 1;
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits, dots, colons and hex letters were written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("bad ip {s}"))
    }

    #[test]
    fn untrusted_peer_cannot_spoof() {
        let trusted = TrustedProxies::parse("T", Some("10.0.0.0/8")).unwrap_or_default();
        assert_eq!(trusted.client_ip(ip("198.51.100.9"), Some("1.2.3.4")), ip("198.51.100.9"));
    }

    #[test]
    fn trusted_chain_yields_first_untrusted_hop() {
        let trusted = TrustedProxies::parse("T", Some("10.0.0.0/8, 192.168.1.1")).unwrap_or_default();
        assert_eq!(trusted.client_ip(ip("10.1.1.1"), Some("6.6.6.6, 203.0.113.5, 192.168.1.1")), ip("203.0.113.5"));
        assert_eq!(trusted.client_ip(ip("10.1.1.1"), Some("garbage")), ip("10.1.1.1"));
        assert_eq!(trusted.client_ip(ip("::ffff:10.1.1.1"), None), ip("10.1.1.1"));
    }

    #[test]
    fn every_forwarded_for_line_is_one_list() {
        let trusted = TrustedProxies::parse("T", Some("10.0.0.0/8")).unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, http::HeaderValue::from_static("198.51.100.1"));
        headers.append(X_FORWARDED_FOR, http::HeaderValue::from_static("203.0.113.50, 10.0.0.7"));
        assert_eq!(trusted.client_ip_from_headers(ip("10.0.0.1"), &headers), ip("203.0.113.50"));
        assert_eq!(trusted.client_ip_from_headers(ip("198.51.100.9"), &headers), ip("198.51.100.9"));
        assert_eq!(trusted.client_ip_from_headers(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
        let mut one = HeaderMap::new();
        one.append(X_FORWARDED_FOR, http::HeaderValue::from_static("203.0.113.9"));
        assert_eq!(trusted.client_ip_from_headers(ip("10.0.0.1"), &one), ip("203.0.113.9"));
    }

    #[test]
    fn loopback_can_be_added_once() {
        let trusted = TrustedProxies::default().with_loopback().with_loopback();
        assert!(trusted.contains(ip("127.0.0.1")) && trusted.contains(ip("::1")));
        assert_eq!(trusted.0.len(), 2);
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn ipv6_limits_count_by_the_64() {
        assert_eq!(limit_key(ip("203.0.113.7")), "203.0.113.7");
        assert_eq!(limit_key(ip("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(limit_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), limit_key(ip("2001:db8:1:2::9")));
        assert_ne!(limit_key(ip("2001:db8:1:3::1")), limit_key(ip("2001:db8:1:2::1")));
    }

    #[test]
    fn bad_entries_name_the_variable() {
        let err = TrustedProxies::parse("TRUSTED_PROXIES", Some("10.0.0.0/8,nope")).unwrap_err();
        assert_eq!(err.variable, "TRUSTED_PROXIES");
    }

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.20.3.40",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }
}
