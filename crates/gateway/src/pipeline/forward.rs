//! The last stages of a proxied request: credentials stripped unless the route opts in, the
//! WebSocket upgrade put back where the route passes it, forwarding headers, the verified
//! context signed over the method and the path the upstream sees, and the request handed to
//! the proxy. The built-in routes to the auth and socket services forward through
//! [`forward`] too, without a context.

use std::{borrow::Cow, sync::Arc, time::Duration};

use auth_contract::{AuthContext, headers::sign_shared_context_into};
use axum::{extract::Request, response::Response};
use http::{HeaderName, HeaderValue, header};

use crate::{
    domain::Upstream,
    error::{GatewayError, REQUEST_ID},
    pipeline::ClientIp,
    proxy::{Target, WebSocketRequest, restore_websocket, set_header},
    routing::MatchedRoute,
    state::Gateway,
};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A route's timeout per attempt, extra attempts and body limit.
pub type Limits = (Duration, u32, u64);

/// Forwards `request` to `upstream` at `path_and_query`, with forwarding headers and, when the
/// request was authenticated, the signed context.
pub async fn forward(
    gateway: &Gateway,
    mut request: Request,
    upstream: &Upstream,
    path_and_query: &str,
    limits: Limits,
    ip: Option<ClientIp>,
    context: Option<&Arc<AuthContext>>,
) -> Result<Response, GatewayError> {
    let host = request.headers().get(header::HOST).cloned();
    let headers = request.headers_mut();
    if let Some(ip) = ip {
        set_header(headers, X_FORWARDED_FOR, platform::net::IpText::new(ip.0).as_str());
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if let Some(context) = context {
        // The upstream sees its base path in front of ours, and verifies what it sees.
        let signed_path = match upstream.base_path() {
            "" => Cow::Borrowed(path_and_query),
            base => Cow::Owned(format!("{base}{path_and_query}")),
        };
        let now = gateway.deps.clock.now().unix_timestamp();
        let (method, headers) = (request.method().clone(), request.headers_mut());
        let key = &gateway.context_key;
        let signed = match REQUEST_ID
            .try_with(|id| sign_shared_context_into(key, context, &method, &signed_path, id, now, headers))
        {
            Ok(signed) => signed,
            Err(_) => sign_shared_context_into(key, context, &method, &signed_path, "", now, headers),
        };
        signed.map_err(|e| GatewayError::Internal(format!("cannot sign context: {e}")))?;
    }
    let (timeout, retries, max_body) = limits;
    gateway.proxy.forward(request, Target { upstream, path_and_query, timeout, retries, max_body }).await
}

/// `?query` of the request, or nothing.
pub fn query_suffix(request: &Request) -> String {
    request.uri().query().map(|q| format!("?{q}")).unwrap_or_default()
}

/// A matched configured route (or the ticket route): the verified `context` signed in.
pub async fn to_route(
    gateway: &Gateway,
    mut request: Request,
    matched: &MatchedRoute,
    context: Option<&Arc<AuthContext>>,
    ip: ClientIp,
    websocket: Option<WebSocketRequest>,
) -> Result<Response, GatewayError> {
    let policy = &matched.policy;
    // Credentials stop here unless the route opts in; the built-in ticket route keeps them.
    if matched.upstream_path.is_none() && !policy.forward_credentials {
        strip_credentials(request.headers_mut());
    }
    if policy.websocket && websocket.is_some() {
        restore_websocket(request.headers_mut());
    }
    let uri = request.uri().clone();
    let path_and_query = match matched.upstream_path {
        Some(path) => Cow::Owned(format!("{path}{}", query_suffix(&request))),
        None => Cow::Borrowed(uri.path_and_query().map_or_else(|| uri.path(), |pq| pq.as_str())),
    };
    let limits = (policy.timeout, policy.retries, policy.max_body);
    forward(gateway, request, &policy.upstream, &path_and_query, limits, Some(ip), context).await
}

/// Removes `Authorization`, `X-API-Key` and the `pc_*` cookies the auth service sets (other
/// cookies stay): never a configured upstream's business.
fn strip_credentials(headers: &mut http::HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    headers.remove(auth_contract::credential::API_KEY_HEADER);
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !pair.starts_with(auth_contract::credential::COOKIE_PREFIX))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stripped_and_other_cookies_kept() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.append("x-api-key", HeaderValue::from_static("pck_a"));
        headers.append("x-api-key", HeaderValue::from_static("pck_b"));
        headers.append(header::COOKIE, HeaderValue::from_static("pc_refresh=r; theme=dark"));
        headers.append(header::COOKIE, HeaderValue::from_static("lang=en;pc_x=1"));
        strip_credentials(&mut headers);
        assert!(headers.get(header::AUTHORIZATION).is_none() && headers.get("x-api-key").is_none());
        assert_eq!(headers.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["theme=dark; lang=en"]);
        let mut only = http::HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("pc_refresh=r"));
        strip_credentials(&mut only);
        assert!(only.get(header::COOKIE).is_none());
    }
}
