//! `GET /ws`: the credential is validated once, before the upgrade; a refused credential
//! gets its HTTP status (401, 403 or 503) and never a socket.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use auth_contract::{AuthContext, Kind};
use axum::{
    extract::{
        Query, State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use platform::origin::Origin;

use super::{ApiError, Peer, RequestId, client_ip};
use crate::{app::SocketService, connection, protocol::MAX_MESSAGE_BYTES, store::StoredConnection};

/// Buffers sized for many idle connections (tungstenite's defaults are 128 KiB each).
const READ_BUFFER: usize = 4 * 1024;
const MAX_WRITE_BUFFER: usize = 2 * MAX_MESSAGE_BYTES;

/// Where the credential came from.
enum Credential {
    Bearer(String),
    Subprotocol(String),
    Ticket(String),
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned()).filter(|t| !t.is_empty())
}

/// The token of a `Sec-WebSocket-Protocol: bearer, <token>` pair.
fn subprotocol_token(headers: &HeaderMap) -> Option<String> {
    let mut items = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty());
    while let Some(item) = items.next() {
        if item.eq_ignore_ascii_case("bearer") {
            return items.next().map(str::to_owned);
        }
    }
    None
}

fn credential(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<Credential> {
    if let Some(token) = bearer(headers) {
        return Some(Credential::Bearer(token));
    }
    if let Some(token) = subprotocol_token(headers) {
        return Some(Credential::Subprotocol(token));
    }
    query.get("ticket").map(|t| t.trim()).filter(|t| !t.is_empty()).map(|t| Credential::Ticket(t.to_owned()))
}

/// The request's `Origin`, canonical; a malformed one is refused like a foreign one.
fn origin(headers: &HeaderMap) -> Result<Option<Origin>, ApiError> {
    match headers.get(header::ORIGIN) {
        None => Ok(None),
        Some(value) => {
            let text = value.to_str().map_err(|_| ApiError::OriginNotAllowed)?;
            Origin::parse(text).map(Some).map_err(|_| ApiError::OriginNotAllowed)
        }
    }
}

/// Whether a context may connect from `origin`. No `Origin` is a non-browser client. SDK
/// tokens and API keys were already checked by the auth service against their tenant's
/// origins (or, for a ticket, against the origin the ticket was minted from); the platform's
/// own credentials need `SOCKET_ALLOWED_ORIGINS`.
fn origin_allowed(
    service: &SocketService,
    context: &AuthContext,
    origin: Option<&Origin>,
    ticket_origin: Option<Option<&str>>,
) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    match (context.kind, ticket_origin) {
        (Kind::Sdk | Kind::ApiKey, None) => true,
        (Kind::Sdk | Kind::ApiKey, Some(minted)) => minted == Some(origin.as_str()),
        (Kind::User | Kind::Pat | Kind::Service, _) => service.config().allowed_origins.contains(origin),
    }
}

async fn authenticate(
    service: &SocketService,
    credential: &Credential,
    ip: IpAddr,
    origin: Option<&Origin>,
) -> Result<(Arc<AuthContext>, Option<String>), ApiError> {
    let (context, token) = match credential {
        Credential::Bearer(token) | Credential::Subprotocol(token) => {
            let context = service.auth().validate(token, Some(ip), origin.map(Origin::as_str)).await?;
            if !origin_allowed(service, &context, origin, None) {
                return Err(ApiError::OriginNotAllowed);
            }
            (context, Some(token.clone()))
        }
        Credential::Ticket(ticket) => {
            let ticket = service.inner.deps.tickets.take(ticket).await?.ok_or(ApiError::TicketInvalid)?;
            if !origin_allowed(service, &ticket.context, origin, Some(ticket.origin.as_deref())) {
                return Err(ApiError::OriginNotAllowed);
            }
            (Arc::new(ticket.context), None)
        }
    };
    if context.expires_at.is_some_and(|exp| exp <= service.now()) {
        return Err(ApiError::Denied {
            code: auth_contract::ErrorCode::TokenExpired,
            message: "the credential has expired".to_owned(),
        });
    }
    Ok((context, token))
}

pub async fn connect(
    State(service): State<SocketService>,
    Peer(peer): Peer,
    RequestId(request_id): RequestId,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let refused = |error: ApiError| {
        let response = error.at(&request_id).into_response();
        service.metrics().refused_handshakes.with_label_values(&[response.status().as_str()]).inc();
        response
    };
    // Not an upgrade at all: refuse before a ticket is spent on it.
    let Ok(upgrade) = upgrade else {
        return refused(ApiError::UpgradeRequired);
    };
    let origin = match origin(&headers) {
        Ok(origin) => origin,
        Err(error) => return refused(error),
    };
    let Some(credential) = credential(&headers, &query) else {
        return refused(ApiError::TokenMissing);
    };
    let ip = client_ip(&service, peer, &headers);
    let (context, token) = match authenticate(&service, &credential, ip, origin.as_ref()).await {
        Ok(found) => found,
        Err(error) => return refused(error),
    };

    let key = uuid::Uuid::new_v4().to_string();
    let connected_at = service.now();
    let stored = StoredConnection {
        id: key.clone(),
        node: service.inner.node.clone(),
        context: (*context).clone(),
        connected_at,
    };
    if let Err(err) = service.contexts().put(&stored, service.config().heartbeat * 3).await {
        return refused(err.into());
    }
    let origin = origin.map(|o| o.as_str().to_owned());
    let Some((conn, outbound)) = service.hub().register(key, context, token, Some(ip), origin, connected_at) else {
        let _ = service.contexts().remove(&stored.id, stored.owner()).await;
        return refused(ApiError::Unavailable("the node is shutting down".to_owned()));
    };
    tracing::debug!(conn = %conn.key, kind = %conn.context().kind, "connection accepted");

    let mut upgrade = upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES);
    if matches!(credential, Credential::Subprotocol(_)) {
        // Answer `bearer` only: the token must never be echoed back.
        upgrade = upgrade.protocols(["bearer"]);
    }
    let failed = (service.clone(), conn.clone());
    upgrade
        .on_failed_upgrade(move |err| {
            let (service, conn) = failed;
            tracing::debug!(error = %err, "upgrade failed");
            service.hub().unregister(&conn);
            tokio::spawn(async move {
                let owner = crate::protocol::own_id(&conn.context()).map(str::to_owned);
                let _ = service.contexts().remove(&conn.key, owner.as_deref()).await;
            });
        })
        .on_upgrade(move |socket| connection::serve(service, conn, outbound, socket))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn reads_each_credential_form() {
        let mut headers = HeaderMap::new();
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("bearer, abc.def"));
        assert!(matches!(credential(&headers, &HashMap::new()), Some(Credential::Subprotocol(t)) if t == "abc.def"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer tok"));
        assert!(matches!(credential(&headers, &HashMap::new()), Some(Credential::Bearer(t)) if t == "tok"));
        let query = HashMap::from([("ticket".to_owned(), "pct_x".to_owned())]);
        assert!(matches!(credential(&HeaderMap::new(), &query), Some(Credential::Ticket(t)) if t == "pct_x"));
        let mut lone = HeaderMap::new();
        lone.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("bearer"));
        assert!(credential(&lone, &HashMap::new()).is_none());
    }
}
