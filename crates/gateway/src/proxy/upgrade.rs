//! WebSocket (and any HTTP/1.1 `Upgrade`) pass-through: the handshake is forwarded like any
//! request, and once the upstream answers `101 Switching Protocols` both upgraded connections
//! are spliced together until either side closes.

use axum::body::Body;
use http::{HeaderMap, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::{Proxy, Target, empty, strip_hop_by_hop};
use crate::error::GatewayError;

/// Whether the request asks to switch protocols.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

pub(super) async fn forward(
    proxy: &Proxy,
    mut request: Request<Body>,
    target: Target<'_>,
) -> Result<Response<Body>, GatewayError> {
    let client_upgrade = hyper::upgrade::on(&mut request);
    let (mut parts, _body) = request.into_parts();
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = upgrade {
        parts.headers.insert(header::UPGRADE, upgrade);
        parts.headers.insert(header::CONNECTION, http::HeaderValue::from_static("upgrade"));
    }
    let uri: Uri = target.upstream.request_target(target.path_and_query).ok_or(GatewayError::NotFound)?;
    let breaker = proxy.breaker(target.upstream);
    if !breaker.is_call_permitted() {
        return Err(GatewayError::UpstreamUnavailable);
    }
    let mut outgoing = Request::new(empty());
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = parts.headers;
    let mut response = match tokio::time::timeout(target.timeout, Proxy::send(target.upstream, outgoing)).await {
        Ok(Ok(response)) => {
            breaker.on_success();
            response
        }
        Ok(Err(err)) => {
            breaker.on_error();
            tracing::warn!(upstream = %target.upstream, error = %err, "upgrade request failed");
            return Err(GatewayError::UpstreamUnavailable);
        }
        Err(_) => {
            breaker.on_error();
            return Err(GatewayError::UpstreamTimeout);
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // A refusal (401, 403, …) is passed on as an ordinary answer.
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Ok(Response::from_parts(parts, Body::new(body.map_err(axum::Error::new))));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(error = %err, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %err, "upgraded connection ended");
        }
    });
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, Body::empty()))
}
