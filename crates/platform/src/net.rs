//! Client IP resolution: the TCP peer, or the `X-Forwarded-For` chain only when the peer is a
//! trusted proxy, so a client cannot choose its own address.

use std::net::IpAddr;

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
}
