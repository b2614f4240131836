//! Authentication for proxied routes, through `auth-contract` only (the gateway holds no
//! signing key). The credential is a Bearer token (access token, SDK token or PAT; a `pck_`
//! Bearer is an API key) or `X-API-Key`. The client IP (when `IP_WHITELIST_ENABLED`) and
//! `Origin` (when `ORIGIN_VALIDATION_ENABLED`) go with it, so the auth service decides the
//! client's allowlist and origins. Then the route's accepted kinds, scopes and roles are
//! checked. When the auth service cannot be reached, anything not cached fails closed with
//! 503.

use std::sync::Arc;

use auth_contract::{AuthContext, Kind, Presented};
use http::{HeaderMap, header};

use crate::{
    config::routes::RoutePolicy, domain::CredentialKind, error::GatewayError, pipeline::ClientIp, state::Gateway,
};

/// The request's credential, read by the contract's one reader (SPEC §6 rules).
pub fn credential(headers: &HeaderMap) -> Result<Presented<'_>, GatewayError> {
    Presented::from_headers(headers).map_err(|err| GatewayError::Denied { code: err.code(), message: err.to_string() })
}

fn route_kind(kind: Kind) -> Option<CredentialKind> {
    match kind {
        Kind::User => Some(CredentialKind::User),
        Kind::Pat => Some(CredentialKind::Pat),
        Kind::Sdk => Some(CredentialKind::Sdk),
        Kind::ApiKey => Some(CredentialKind::ApiKey),
        // Services call each other directly with their own tokens, never through the edge.
        Kind::Service => None,
    }
}

/// The route's demands on a verified context: kind, every scope, any one role.
pub fn authorize(policy: &RoutePolicy, context: &AuthContext) -> Result<(), GatewayError> {
    let accepted = route_kind(context.kind).is_some_and(|kind| policy.auth.accepts(kind));
    if !accepted {
        return Err(GatewayError::Forbidden(format!(
            "this route does not accept {} credentials",
            context.kind.as_str().replace('_', " ")
        )));
    }
    if let Some(scope) = policy.scopes.iter().find(|scope| !context.has_scope(scope.as_str())) {
        return Err(GatewayError::InsufficientScope(scope.as_str().to_owned()));
    }
    if !policy.roles.is_empty() && !context.role.is_some_and(|role| policy.roles.contains(&role)) {
        return Err(GatewayError::Forbidden("this route requires another role".to_owned()));
    }
    Ok(())
}

/// Validates the request's credential with the auth service (or its cache).
pub async fn validate(gateway: &Gateway, headers: &HeaderMap, ip: ClientIp) -> Result<Arc<AuthContext>, GatewayError> {
    let presented = credential(headers)?;
    // A header that is not text is an origin nobody allowed.
    let origin = if gateway.config.origin_validation_enabled {
        headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null"))
    } else {
        None
    };
    let allowlist_ip = gateway.config.ip_allowlist_enabled.then_some(ip.0);
    // A credential the cache already allows costs no call and cannot fail: nothing to count.
    if let Some(context) = gateway.auth.cached_allowed(presented, allowlist_ip, origin).await {
        return Ok(context);
    }
    // Concurrent requests with the same credential (a new token, or one whose cached answer
    // just expired) ask once: the others wait for that answer and take it from the cache, so
    // a burst of one valid credential is one reservation. Without such an answer (refused, or
    // the auth service could not be asked) each goes on as below, counted.
    let question = auth_contract::client::cache_key(presented.secret().trim(), allowlist_ip, origin);
    let mut turn = gateway.auth_failures.turn(question);
    if matches!(turn, platform::counters::Turn::Follow(_)) {
        turn.wait().await;
        if let Some(context) = gateway.auth.cached_allowed(presented, allowlist_ip, origin).await {
            return Ok(context);
        }
    }
    // Limits come before work: any other credential reserves one authentication failure for
    // its IP before it is looked at (a refusal the cache remembers included), and gives it
    // back unless it is refused as invalid.
    let admitted =
        gateway.auth_failures.admit(ip.0).await.map_err(|retry_after| GatewayError::RateLimited { retry_after })?;
    // The call's future is large (tonic's); boxed here, it stays off the cached path's.
    let result = match presented {
        Presented::ApiKey(key) => Box::pin(gateway.auth.validate_api_key(key, allowlist_ip, origin)).await,
        Presented::Token(token) => Box::pin(gateway.auth.validate(token, allowlist_ip, origin)).await,
    };
    let failed = matches!(&result, Err(auth_contract::ClientError::Denied { code, .. })
        if auth_contract::codes::http_status(*code) == 401);
    if !failed {
        gateway.auth_failures.refund(admitted).await;
    }
    drop(turn);
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::config::routes::RoutesFile;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn credential_refusals_are_401_with_their_codes() {
        assert_eq!(credential(&headers(&[("x-api-key", "pck_y")])).unwrap(), Presented::ApiKey("pck_y"));
        for (bad, code) in [
            (&[][..], "token_missing"),
            (&[("authorization", "Basic abc")], "token_missing"),
            (&[("authorization", "Bearer ")], "token_missing"),
            (&[("x-api-key", " ")], "token_missing"),
            (&[("authorization", "Bearer a"), ("x-api-key", "pck_b")], "token_invalid"),
        ] {
            let err = credential(&headers(bad)).unwrap_err();
            assert_eq!((err.status().as_u16(), err.code()), (401, code), "{bad:?}");
        }
    }

    fn policy(toml: &str) -> Arc<RoutePolicy> {
        RoutesFile::parse(toml).unwrap().routes.iter().next().unwrap().clone()
    }

    fn context(kind: Kind, scopes: &[&str], role: Option<&str>) -> AuthContext {
        AuthContext {
            subject: "s".into(),
            kind,
            user_id: Some("u".into()),
            tenant_id: None,
            client_id: None,
            session_id: None,
            credential_id: None,
            role: role.map(|r| auth_contract::Role::parse(r).unwrap()),
            scopes: auth_contract::scope::Scopes::from_wire(scopes.iter().copied()),
            expires_at: None,
            rate_limit: None,
        }
    }

    #[test]
    fn kinds_scopes_and_roles_are_enforced() {
        let route = policy(
            "[[routes]]\nprefix = \"/v1/user/orders\"\nupstream = \"http://127.0.0.1:9\"\nauth = [\"user\", \"pat\"]\n\
             scopes = [\"orders:read\"]\nroles = [\"admin\"]\n",
        );
        assert!(authorize(&route, &context(Kind::User, &["orders:read"], Some("admin"))).is_ok());
        assert_eq!(authorize(&route, &context(Kind::Sdk, &["orders:read"], Some("admin"))).unwrap_err().status(), 403);
        assert_eq!(authorize(&route, &context(Kind::Service, &["*"], Some("admin"))).unwrap_err().status(), 403);
        assert_eq!(
            authorize(&route, &context(Kind::Pat, &["orders:write"], Some("admin"))).unwrap_err().code(),
            "insufficient_scope"
        );
        assert_eq!(
            authorize(&route, &context(Kind::User, &["orders:read"], Some("member"))).unwrap_err().code(),
            "forbidden"
        );
    }
}
