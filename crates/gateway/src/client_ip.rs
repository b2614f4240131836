//! The caller's IP as the gateway decided it: the TCP peer, or the right-most address in
//! `X-Forwarded-For` not added by a proxy in `TRUSTED_PROXIES`. The client-IP layer puts it in
//! the request's extensions; handlers read `Extension<ClientIp>`.

use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);
