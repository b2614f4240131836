//! Authentication for proxied routes, through `auth-contract` only (the gateway holds no
//! signing key). The credential is a Bearer token (access token, SDK token or PAT; a `pck_`
//! Bearer is an API key) or `X-API-Key`. The client IP (when `IP_WHITELIST_ENABLED`) and
//! `Origin` (when `ORIGIN_VALIDATION_ENABLED`) go with it, so the auth service decides the
//! client's allowlist and origins. Then the route's accepted kinds, scopes and roles are
//! checked, and the verified context goes into the request's extensions. When the auth
//! service cannot be reached, anything not cached fails closed with 503.

use std::sync::Arc;

use auth_contract::{AuthContext, ErrorCode, Kind};
use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, header};

use crate::{
    client_ip::ClientIp,
    domain::{CredentialKind, RouteAuth},
    error::GatewayError,
    layers::MatchedRoute,
    routes::RoutePolicy,
    state::Gateway,
};

const API_KEY_PREFIX: &str = "pck_";

/// The credential a request presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    Token(&'a str),
    ApiKey(&'a str),
}

fn missing(message: &str) -> GatewayError {
    GatewayError::Denied { code: ErrorCode::TokenMissing, message: message.to_owned() }
}

/// Reads the credential: `X-API-Key`, else `Authorization: Bearer`.
pub fn credential(headers: &HeaderMap) -> Result<Credential<'_>, GatewayError> {
    if let Some(value) = headers.get("x-api-key") {
        let key = value.to_str().map(str::trim).unwrap_or_default();
        if key.is_empty() {
            return Err(GatewayError::Denied { code: ErrorCode::KeyInvalid, message: "empty API key".to_owned() });
        }
        return Ok(Credential::ApiKey(key));
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(missing("no credential: send Authorization: Bearer <token> or X-API-Key"));
    };
    let value = value.to_str().unwrap_or_default().trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(missing("the Authorization header must use the Bearer scheme")),
    };
    if token.is_empty() {
        return Err(missing("empty Bearer token"));
    }
    Ok(if token.starts_with(API_KEY_PREFIX) { Credential::ApiKey(token) } else { Credential::Token(token) })
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
    if !policy.roles.is_empty() && !policy.roles.iter().any(|role| context.role.as_deref() == Some(role.as_str())) {
        return Err(GatewayError::Forbidden("this route requires another role".to_owned()));
    }
    Ok(())
}

/// Validates the request's credential with the auth service (or its cache).
pub async fn validate(gateway: &Gateway, headers: &HeaderMap, ip: ClientIp) -> Result<Arc<AuthContext>, GatewayError> {
    let credential = credential(headers)?;
    let ip = gateway.config.ip_allowlist_enabled.then_some(ip.0);
    // A header that is not text is an origin nobody allowed.
    let origin = if gateway.config.origin_validation_enabled {
        headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null"))
    } else {
        None
    };
    let context = match credential {
        Credential::ApiKey(key) => gateway.auth.validate_api_key(key, ip, origin).await?,
        Credential::Token(token) => gateway.auth.validate(token, ip, origin).await?,
    };
    Ok(context)
}

async fn authenticate(gateway: &Gateway, request: &mut Request) -> Result<(), GatewayError> {
    let Some(matched) = request.extensions().get::<MatchedRoute>().cloned() else {
        return Err(GatewayError::Internal("authentication ran before route matching".to_owned()));
    };
    if matches!(matched.policy.auth, RouteAuth::Public) {
        return Ok(());
    }
    let ip = request
        .extensions()
        .get::<ClientIp>()
        .copied()
        .ok_or_else(|| GatewayError::Internal("authentication ran before the client-IP layer".to_owned()))?;
    let context = validate(gateway, request.headers(), ip).await?;
    authorize(&matched.policy, &context)?;
    request.extensions_mut().insert(context);
    Ok(())
}

pub async fn layer(State(gateway): State<Gateway>, mut request: Request, next: Next) -> Response {
    match authenticate(&gateway, &mut request).await {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::routes::RoutesFile;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn credentials_are_read_from_either_header() {
        assert_eq!(credential(&headers(&[("authorization", "Bearer abc")])).unwrap(), Credential::Token("abc"));
        assert_eq!(credential(&headers(&[("authorization", "bearer  abc ")])).unwrap(), Credential::Token("abc"));
        assert_eq!(credential(&headers(&[("authorization", "Bearer pck_x")])).unwrap(), Credential::ApiKey("pck_x"));
        assert_eq!(credential(&headers(&[("x-api-key", "pck_y")])).unwrap(), Credential::ApiKey("pck_y"));
        for bad in [&[][..], &[("authorization", "Basic abc")], &[("authorization", "Bearer ")], &[("x-api-key", " ")]]
        {
            let err = credential(&headers(bad)).unwrap_err();
            assert_eq!(err.status(), 401, "{bad:?}");
        }
    }

    fn policy(toml: &str) -> Arc<RoutePolicy> {
        RoutesFile::parse(toml).unwrap().routes.routes()[0].clone()
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
            role: role.map(Into::into),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
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
