//! The reverse proxy: keep-alive connections per upstream and thread (`pool.rs`), a circuit
//! breaker per upstream, a timeout per attempt, retries only for idempotent requests without a body,
//! streamed bodies both ways with the route's size limit, and WebSocket upgrades spliced
//! through (`upgrade.rs`).

mod pool;
mod upgrade;

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use failsafe::{StateMachine, failure_policy::ConsecutiveFailures};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, LengthLimitError, Limited, combinators::UnsyncBoxBody};

use crate::{domain::Upstream, error::GatewayError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
type Breaker = StateMachine<ConsecutiveFailures<failsafe::backoff::Constant>, ()>;

/// Consecutive failures (connection errors, timeouts, 502/503/504) that open a breaker.
const BREAKER_FAILURES: u32 = 5;
/// How long an open breaker refuses before letting a trial request through.
const BREAKER_OPEN_FOR: Duration = Duration::from_secs(2);
/// Pause before a retry, jittered by up to the same again.
const RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// Where and how one request is forwarded.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub upstream: &'a Upstream,
    /// The path and query sent upstream, appended to the upstream's base path.
    pub path_and_query: &'a str,
    pub timeout: Duration,
    pub retries: u32,
    pub max_body: u64,
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers and any header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names decides; most messages carry none of these.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Marks a `GET` that asked for `Upgrade: websocket`, the one upgrade SPEC §6 passes. The
/// sanitising layer sets it when it removes the client's hop-by-hop headers; a route that
/// passes WebSockets puts the upgrade back with [`restore_websocket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketRequest;

/// Removes the hop-by-hop headers of an incoming request and every header its `Connection`
/// names, before the gateway adds any header of its own (so a client cannot have those
/// removed); says whether the request asked for a WebSocket upgrade.
pub fn strip_incoming(method: &Method, headers: &mut HeaderMap) -> Option<WebSocketRequest> {
    let websocket = *method == Method::GET
        && upgrade::is_upgrade(headers)
        && headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    strip_hop_by_hop(headers);
    websocket.then_some(WebSocketRequest)
}

/// The upgrade headers of a WebSocket handshake, for the routes that pass it on.
pub fn restore_websocket(headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// A request without a body can be sent again as is. Judged from the body itself (its exact
/// size is known to be zero), since the framing headers were removed with the hop-by-hop ones.
fn bodiless(body: &Body) -> bool {
    axum::body::HttpBody::size_hint(body).exact() == Some(0)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn is_length_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = current {
        if err.is::<LengthLimitError>() {
            return true;
        }
        current = err.source();
    }
    false
}

/// A breaker's state for `/metrics`: 0 closed, 1 open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerState {
    pub upstream: String,
    pub open: bool,
}

#[derive(Clone)]
pub struct Proxy {
    breakers: Arc<RwLock<HashMap<String, Arc<Breaker>>>>,
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

impl Proxy {
    pub fn new() -> Self {
        Self { breakers: Arc::default() }
    }

    /// Sends `request` (its URI the request target) to `upstream` over this thread's
    /// connections, with the upstream's authority as `Host` when the client sent none.
    async fn send(upstream: &Upstream, mut request: Request<ProxyBody>) -> Result<Response<pool::Returning>, BoxError> {
        if !request.headers().contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(upstream.authority())
        {
            request.headers_mut().insert(header::HOST, host);
        }
        pool::send(upstream, request).await
    }

    fn breaker(&self, upstream: &Upstream) -> Arc<Breaker> {
        let key = upstream.origin();
        if let Some(breaker) = self.breakers.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(key) {
            return breaker.clone();
        }
        let mut breakers = self.breakers.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        breakers
            .entry(key.to_owned())
            .or_insert_with(|| {
                Arc::new(
                    failsafe::Config::new()
                        .failure_policy(failsafe::failure_policy::consecutive_failures(
                            BREAKER_FAILURES,
                            failsafe::backoff::constant(BREAKER_OPEN_FOR),
                        ))
                        .build(),
                )
            })
            .clone()
    }

    /// Every upstream seen so far and whether its breaker is open.
    pub fn breaker_states(&self) -> Vec<BreakerState> {
        let breakers = self.breakers.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut states: Vec<BreakerState> = breakers
            .iter()
            .map(|(upstream, b)| BreakerState { upstream: upstream.clone(), open: !b.is_call_permitted() })
            .collect();
        states.sort_by(|a, b| a.upstream.cmp(&b.upstream));
        states
    }

    /// Forwards `request` (headers already prepared by the caller, hop-by-hop ones included:
    /// they are removed here) and returns the upstream's answer with its body streamed.
    pub async fn forward(&self, request: Request<Body>, target: Target<'_>) -> Result<Response<Body>, GatewayError> {
        if upgrade::is_upgrade(request.headers()) {
            return Box::pin(upgrade::forward(self, request, target)).await;
        }
        let (mut parts, body) = request.into_parts();
        if declared_length(&parts.headers).is_some_and(|len| len > target.max_body) {
            return Err(GatewayError::BodyTooLarge { limit: target.max_body });
        }
        strip_hop_by_hop(&mut parts.headers);
        let mut uri: Uri = target.upstream.request_target(target.path_and_query).ok_or(GatewayError::NotFound)?;
        let attempts = if idempotent(&parts.method) && bodiless(&body) { 1 + target.retries } else { 1 };
        let breaker = self.breaker(target.upstream);
        let mut body = Some(Limited::new(body, target.max_body as usize).boxed_unsync());
        let mut last = GatewayError::UpstreamUnavailable;
        for attempt in 0..attempts {
            if !breaker.is_call_permitted() {
                return Err(GatewayError::UpstreamUnavailable);
            }
            let mut outgoing = Request::new(body.take().unwrap_or_else(empty));
            *outgoing.method_mut() = parts.method.clone();
            // Only a retry needs the originals again; the last attempt takes them.
            if attempt + 1 == attempts {
                *outgoing.uri_mut() = std::mem::take(&mut uri);
                *outgoing.headers_mut() = std::mem::take(&mut parts.headers);
            } else {
                *outgoing.uri_mut() = uri.clone();
                *outgoing.headers_mut() = parts.headers.clone();
            }
            match tokio::time::timeout(target.timeout, Self::send(target.upstream, outgoing)).await {
                Ok(Ok(response)) => {
                    let status = response.status();
                    let failing = matches!(
                        status,
                        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
                    );
                    if failing {
                        breaker.on_error();
                    } else {
                        breaker.on_success();
                    }
                    if !failing || attempt + 1 == attempts {
                        return Ok(into_response(response));
                    }
                    last = GatewayError::UpstreamUnavailable;
                }
                Ok(Err(err)) => {
                    if is_length_limit(&*err) {
                        return Err(GatewayError::BodyTooLarge { limit: target.max_body });
                    }
                    breaker.on_error();
                    tracing::warn!(upstream = %target.upstream, error = %err, "upstream request failed");
                    last = GatewayError::UpstreamUnavailable;
                }
                Err(_) => {
                    breaker.on_error();
                    last = GatewayError::UpstreamTimeout;
                }
            }
            if attempt + 1 < attempts {
                let jitter = rand_jitter(RETRY_BACKOFF);
                Box::pin(tokio::time::sleep(RETRY_BACKOFF + jitter)).await;
            }
        }
        Err(last)
    }
}

fn empty() -> ProxyBody {
    http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

fn into_response(response: Response<pool::Returning>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// Up to `max` of jitter, from a random UUID's low bits.
fn rand_jitter(max: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u64_pair().1;
    Duration::from_nanos(random % u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1))
}

/// Sets a header from a string the gateway produced; a value that is not a valid header
/// (which the gateway never produces) is skipped rather than sent mangled.
pub fn set_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn only_idempotent_bodiless_requests_are_retryable() {
        assert!(idempotent(&Method::GET) && bodiless(&Body::empty()));
        assert!(!idempotent(&Method::POST) && !idempotent(&Method::PATCH));
        assert!(!bodiless(&Body::from("twelve bytes")));
        assert!(bodiless(&Body::from("")));
        // A chunked body: its size is unknown, so it is never sent twice.
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
        assert!(!bodiless(&Body::from_stream(chunks)));
    }

    #[test]
    fn a_length_limit_error_is_found_in_the_source_chain() {
        #[derive(Debug)]
        struct Wrapper(LengthLimitError);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = Limited::new(http_body_util::Full::new(Bytes::from_static(b"12345")), 2);
        // The error type is private to construct; obtain one by reading past the limit.
        let limit_err = futures::executor::block_on(err.collect()).expect_err("over the limit");
        let limit_err = limit_err.downcast::<LengthLimitError>().expect("a length-limit error");
        assert!(is_length_limit(&Wrapper(*limit_err)));
        assert!(!is_length_limit(&std::io::Error::other("x")));
    }
}
