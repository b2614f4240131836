//! The client's IP: the TCP peer, or (only when the peer is in `TRUSTED_PROXIES`) the
//! right-most untrusted address of `X-Forwarded-For`. A spoofed header from anyone else is
//! ignored.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use platform::net::TrustedProxies;

/// The client's address as the gateway decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Decides the client IP of a request that arrived from `peer`.
pub fn resolve_from(trusted: &TrustedProxies, peer: SocketAddr, headers: &http::HeaderMap) -> ClientIp {
    ClientIp(trusted.client_ip_from_headers(peer.ip(), headers))
}

/// The TCP peer of a request from the listener (in the extensions; `0.0.0.0:0` without).
pub fn peer(request: &Request) -> SocketAddr {
    request.extensions().get::<ConnectInfo<SocketAddr>>().map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0)
}

/// The client IP of a request from the listener.
pub fn resolve(trusted: &TrustedProxies, request: &Request) -> ClientIp {
    resolve_from(trusted, peer(request), request.headers())
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};
    use platform::net::X_FORWARDED_FOR;

    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let trusted = TrustedProxies::parse("T", Some("10.0.0.0/8")).unwrap();
        let peer: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        assert_eq!(resolve_from(&trusted, peer, &headers(&["1.2.3.4"])).0, ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_proxy_chain_is_walked_from_the_right() {
        let trusted = TrustedProxies::parse("T", Some("10.0.0.0/8")).unwrap();
        let peer: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        assert_eq!(resolve_from(&trusted, peer, &headers(&["6.6.6.6, 198.51.100.7, 10.0.0.3"])).0, ip("198.51.100.7"));
        // Two header lines are one list.
        assert_eq!(resolve_from(&trusted, peer, &headers(&["6.6.6.6", "198.51.100.8"])).0, ip("198.51.100.8"));
        assert_eq!(resolve_from(&trusted, peer, &headers(&[])).0, ip("10.0.0.2"));
    }

    #[test]
    fn mapped_ipv6_peers_are_their_ipv4_address() {
        let trusted = TrustedProxies::default();
        let peer: SocketAddr = "[::ffff:203.0.113.9]:5000".parse().unwrap();
        assert_eq!(resolve_from(&trusted, peer, &headers(&[])).0, ip("203.0.113.9"));
    }
}
