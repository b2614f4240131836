//! The gateway's middleware, one tower layer per concern, applied in this order (outermost
//! first): access log and metrics, security headers, the client's hop-by-hop headers removed,
//! request id and `traceparent`, sanitising
//! (client-supplied context headers removed, ambiguous paths refused), client IP, CORS; then,
//! for proxied routes, route matching, authentication (with the allowlist and origin decided
//! by the auth service) and rate limits. Each file holds one layer and its tests.

pub mod access_log;
pub mod authn;
pub mod client_ip;
pub mod cors;
pub mod hop_by_hop;
pub mod rate_limit;
pub mod request_id;
pub mod route_match;
pub mod sanitize;
pub mod security;

pub use request_id::RequestId;
pub use route_match::MatchedRoute;
