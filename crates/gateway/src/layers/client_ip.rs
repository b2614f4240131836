//! The client's IP: the TCP peer, or (only when the peer is in `TRUSTED_PROXIES`) the
//! right-most untrusted address of `X-Forwarded-For`. A spoofed header from anyone else is
//! ignored. The result goes into the request's extensions as [`ClientIp`].

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::Response,
};
use platform::net::TrustedProxies;

use crate::client_ip::ClientIp;

pub use platform::net::X_FORWARDED_FOR;

/// Decides the client IP of a request that arrived from `peer`.
pub fn resolve(trusted: &TrustedProxies, peer: SocketAddr, headers: &http::HeaderMap) -> ClientIp {
    ClientIp(trusted.client_ip_from_headers(peer.ip(), headers))
}

pub async fn layer(State(trusted): State<TrustedProxies>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |ConnectInfo(addr)| *addr);
    let ip = resolve(&trusted, peer, request.headers());
    request.extensions_mut().insert(ip);
    let mut response = next.run(request).await;
    // For the access log, which wraps this layer.
    response.extensions_mut().insert(ip);
    response
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use http::{HeaderMap, HeaderValue};

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
        assert_eq!(resolve(&trusted, peer, &headers(&["1.2.3.4"])).0, ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_proxy_chain_is_walked_from_the_right() {
        let trusted = TrustedProxies::parse("T", Some("10.0.0.0/8")).unwrap();
        let peer: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        assert_eq!(resolve(&trusted, peer, &headers(&["6.6.6.6, 198.51.100.7, 10.0.0.3"])).0, ip("198.51.100.7"));
        // Two header lines are one list.
        assert_eq!(resolve(&trusted, peer, &headers(&["6.6.6.6", "198.51.100.8"])).0, ip("198.51.100.8"));
        assert_eq!(resolve(&trusted, peer, &headers(&[])).0, ip("10.0.0.2"));
    }

    #[test]
    fn mapped_ipv6_peers_are_their_ipv4_address() {
        let trusted = TrustedProxies::default();
        let peer: SocketAddr = "[::ffff:203.0.113.9]:5000".parse().unwrap();
        assert_eq!(resolve(&trusted, peer, &headers(&[])).0, ip("203.0.113.9"));
    }
}
