//! Which buckets a request counts against: the optional per-IP limit `IP_RATE_LIMIT` on every
//! request (before authentication), and per tenant on proxied routes (the tenant's own limit,
//! set with `/client/{id}/rate-limit`, replaces the route's default; without a tenant the
//! route's limit applies per principal, or per IP when the route is public). Answers carry
//! `RateLimit-*` headers; a refusal is 429 with `Retry-After`.

use auth_contract::AuthContext;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{
    domain::RateLimit, error::GatewayError, pipeline::ClientIp, ratelimit::Decision, routing::MatchedRoute,
    state::Gateway,
};

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// One limit to apply: the bucket key, the limit, and the scope named in metrics.
#[derive(Debug, PartialEq, Eq)]
pub struct Bucket {
    pub key: String,
    pub limit: RateLimit,
    pub scope: &'static str,
}

/// The `IP_RATE_LIMIT` bucket of a client (an IPv6 address by its /64).
fn ip_bucket(limit: RateLimit, ip: ClientIp) -> Bucket {
    Bucket { key: format!("ip:{}", platform::net::limit_key(ip.0)), limit, scope: "ip" }
}

/// Counts `IP_RATE_LIMIT` for `ip`: `Ok(None)` when there is none, 429 when it is spent.
pub async fn ip_limit(gateway: &Gateway, ip: ClientIp) -> Result<Option<Decision>, GatewayError> {
    let Some(limit) = gateway.config.ip_rate_limit else {
        return Ok(None);
    };
    let bucket = ip_bucket(limit, ip);
    // Boxed: only configured limits pay for the counter store's large future.
    let decision = Box::pin(gateway.limiter.check(&bucket.key, bucket.limit)).await;
    if !decision.allowed {
        gateway.metrics.rate_limited.with_label_values(&[bucket.scope]).inc();
        return Err(GatewayError::RateLimited { retry_after: decision.retry_after });
    }
    Ok(Some(decision))
}

/// The route's or tenant's bucket a proxied request counts against, if any (the IP limit is
/// counted on its own, before authentication).
pub fn route_bucket(
    tenant_max: Option<RateLimit>,
    route: &MatchedRoute,
    context: Option<&AuthContext>,
    ip: ClientIp,
) -> Option<Bucket> {
    let prefix = &route.policy.prefix;
    let Some(ctx) = context else {
        let limit = route.policy.rate_limit?;
        return Some(Bucket { key: format!("route:{prefix}:ip:{}", ip.0), limit, scope: "ip" });
    };
    let own = ctx.rate_limit.filter(|l| l.requests > 0 && l.per_ms > 0);
    match (own, ctx.tenant_id.as_deref().filter(|t| !t.is_empty())) {
        (Some(own), Some(tenant)) => {
            let own = RateLimit::from(own);
            let limit = match tenant_max {
                Some(max) if own.is_faster_than(&max) => max,
                _ => own,
            };
            Some(Bucket { key: format!("tenant:{tenant}"), limit, scope: "tenant" })
        }
        (_, tenant) => {
            let limit = route.policy.rate_limit?;
            let who = tenant.map_or_else(|| format!("sub:{}", ctx.subject), |t| format!("tenant:{t}"));
            Some(Bucket { key: format!("route:{prefix}:{who}"), limit, scope: "tenant" })
        }
    }
}

/// The `RateLimit-*` headers of `decision`.
pub fn set_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(decision.limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(decision.reset.as_secs_f64().ceil() as u64));
}

/// Counts a proxied request against its route's or tenant's bucket (the IP limit was counted
/// before authentication). `tightest` ends as the decision to report: the bucket with the
/// fewest requests left, or the one that refused (429).
pub async fn route_limit(
    gateway: &Gateway,
    matched: &MatchedRoute,
    context: Option<&AuthContext>,
    ip: ClientIp,
    tightest: &mut Option<Decision>,
) -> Result<(), GatewayError> {
    let Some(bucket) = route_bucket(gateway.config.tenant_rate_limit_max, matched, context, ip) else {
        return Ok(());
    };
    // Boxed: only configured limits pay for the counter store's large future.
    let decision = Box::pin(gateway.limiter.check(&bucket.key, bucket.limit)).await;
    if !decision.allowed {
        gateway.metrics.rate_limited.with_label_values(&[bucket.scope]).inc();
        *tightest = Some(decision);
        return Err(GatewayError::RateLimited { retry_after: decision.retry_after });
    }
    if tightest.is_none_or(|t| decision.remaining < t.remaining) {
        *tightest = Some(decision);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use auth_contract::Kind;

    use super::*;
    use crate::config::routes::RoutesFile;

    fn route(limit: Option<&str>) -> MatchedRoute {
        let limit = limit.map(|l| format!("rate_limit = \"{l}\"\n")).unwrap_or_default();
        let file = RoutesFile::parse(&format!(
            "[[routes]]\nprefix = \"/v1/sdk/chat\"\nupstream = \"http://127.0.0.1:9\"\n{limit}"
        ))
        .unwrap();
        MatchedRoute { policy: file.routes.iter().next().unwrap().clone(), upstream_path: None }
    }

    fn sdk(tenant: &str, own: Option<(u64, u64)>) -> AuthContext {
        AuthContext {
            subject: format!("sdk:{tenant}:u1"),
            kind: Kind::Sdk,
            user_id: None,
            tenant_id: Some(tenant.into()),
            client_id: Some(tenant.into()),
            session_id: None,
            credential_id: None,
            role: None,
            scopes: auth_contract::scope::Scopes::default(),
            expires_at: None,
            rate_limit: own.map(|(requests, per_ms)| auth_contract::RateLimit { requests, per_ms }),
        }
    }

    const IP: ClientIp = ClientIp(std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7)));

    #[test]
    fn the_tenants_own_limit_replaces_the_route_default() {
        let r = route(Some("100/minute"));
        let own = route_bucket(None, &r, Some(&sdk("c1", Some((5, 1000)))), IP).unwrap();
        assert_eq!(own.key, "tenant:c1");
        assert_eq!(own.limit, RateLimit { requests: 5, per: Duration::from_secs(1) });
        // TENANT_RATE_LIMIT_MAX caps a tenant's own limit.
        let max = RateLimit { requests: 2, per: Duration::from_secs(1) };
        let capped = route_bucket(Some(max), &r, Some(&sdk("c1", Some((50, 1000)))), IP).unwrap();
        assert_eq!(capped.limit, max);
        let under = route_bucket(Some(max), &r, Some(&sdk("c1", Some((1, 1000)))), IP).unwrap();
        assert_eq!(under.limit, RateLimit { requests: 1, per: Duration::from_secs(1) });
        let default = route_bucket(None, &r, Some(&sdk("c1", None)), IP).unwrap();
        assert_eq!(default.key, "route:/v1/sdk/chat:tenant:c1");
        assert_eq!(default.limit.requests, 100);
    }

    #[test]
    fn public_requests_count_per_ip_and_the_ip_limit_applies_everywhere() {
        let r = route(Some("10/second"));
        let anonymous = route_bucket(None, &r, None, IP).unwrap();
        assert_eq!(anonymous.key, "route:/v1/sdk/chat:ip:203.0.113.7");
        let everywhere = ip_bucket(RateLimit { requests: 1, per: Duration::from_secs(1) }, IP);
        assert_eq!(everywhere.key, "ip:203.0.113.7");
        assert!(route_bucket(None, &route(None), Some(&sdk("c1", None)), IP).is_none());
    }
}
