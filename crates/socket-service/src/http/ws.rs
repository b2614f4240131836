//! `GET /ws`: the credential is validated once, before the upgrade; a refused credential
//! gets its HTTP status (401, 403 or 503) and never a socket.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use auth_contract::{AuthContext, ClientError, CredentialError, Kind, Presented};
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
use crate::{connection, protocol::MAX_MESSAGE_BYTES, service::SocketService, store::StoredConnection};

/// Buffers sized for many idle connections (tungstenite's defaults are 128 KiB each).
const READ_BUFFER: usize = 4 * 1024;
const MAX_WRITE_BUFFER: usize = 2 * MAX_MESSAGE_BYTES;

/// Where the credential came from.
enum Credential {
    /// `Authorization: Bearer`, `X-API-Key` or the `bearer, <token>` subprotocol pair.
    Token(String),
    Ticket(String),
}

/// Whether the client offered the `bearer` subprotocol, which the answer must then name.
fn offers_bearer(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(auth_contract::credential::BEARER_SUBPROTOCOL))
}

/// The handshake's one credential (SPEC §6, §7): two that differ, or a header and a ticket,
/// are refused with `token_invalid`; an empty one is `token_missing`.
fn credential(headers: &HeaderMap, query: &HashMap<String, String>) -> Result<Credential, ApiError> {
    let ticket = query.get("ticket").map(|t| t.trim()).filter(|t| !t.is_empty());
    let denied = |err: CredentialError| ApiError::Denied { code: err.code(), message: err.to_string() };
    match (Presented::from_upgrade_headers(headers), ticket) {
        (Ok(_), Some(_)) => Err(denied(CredentialError::Conflict)),
        (Ok(presented), None) => Ok(Credential::Token(presented.secret().to_owned())),
        (Err(CredentialError::Missing), Some(ticket)) => Ok(Credential::Ticket(ticket.to_owned())),
        (Err(CredentialError::Missing), None) => Err(ApiError::TokenMissing),
        (Err(err), _) => Err(denied(err)),
    }
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
) -> Result<Arc<AuthContext>, ApiError> {
    let context = match credential {
        Credential::Token(token) => {
            let origin_text = origin.map(Origin::as_str);
            // Concurrent handshakes with one credential take turns: one reserves and asks, the
            // others wait for it and take its cached answer (see `FailureGuard::turn`).
            let question = auth_contract::client::cache_key(token.trim(), Some(ip), origin_text);
            let mut turn = service.inner.auth_failures.turn(question);
            let mut followed = None;
            if matches!(turn, platform::counters::Turn::Follow(_)) {
                turn.wait().await;
                followed =
                    service.auth().cached_allowed(auth_contract::Presented::Token(token), Some(ip), origin_text).await;
            }
            let context = match followed {
                Some(context) => context,
                None => {
                    // Limits come before work: a reservation per IP, given back unless the
                    // credential is refused as invalid.
                    let admitted = service.inner.auth_failures.admit(ip).await.map_err(ApiError::rate_limited)?;
                    let validated = service.auth().validate(token, Some(ip), origin_text).await;
                    if !matches!(&validated, Err(ClientError::Denied { code, .. }) if auth_contract::codes::http_status(*code) == 401)
                    {
                        service.inner.auth_failures.refund(admitted).await;
                    }
                    drop(turn);
                    validated?
                }
            };
            if !origin_allowed(service, &context, origin, None) {
                return Err(ApiError::OriginNotAllowed);
            }
            context
        }
        Credential::Ticket(ticket) => {
            let ticket = service.inner.deps.tickets.take(ticket).await?.ok_or(ApiError::TicketInvalid)?;
            // Its credential may have been revoked since it was minted.
            if service.hub().revoked_recently(&ticket.context) {
                return Err(super::ticket::revoked());
            }
            if !origin_allowed(service, &ticket.context, origin, Some(ticket.origin.as_deref())) {
                return Err(ApiError::OriginNotAllowed);
            }
            Arc::new(ticket.context)
        }
    };
    // Services publish through `/internal/publish`; they never hold a public socket.
    if context.kind == Kind::Service {
        return Err(ApiError::Forbidden("service tokens cannot open sockets; use /internal/publish"));
    }
    if context.expires_at.is_some_and(|exp| exp <= service.now()) {
        return Err(ApiError::Denied {
            code: auth_contract::ErrorCode::TokenExpired,
            message: "the credential has expired".to_owned(),
        });
    }
    Ok(context)
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
    let credential = match credential(&headers, &query) {
        Ok(credential) => credential,
        Err(error) => return refused(error),
    };
    let ip = client_ip(&service, peer, &headers);
    let context = match authenticate(&service, &credential, ip, origin.as_ref()).await {
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
    let Some((conn, outbound)) = service.hub().register(key, context, Some(ip), origin, connected_at) else {
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
    if matches!(credential, Credential::Token(_)) && offers_bearer(&headers) {
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
        let token = |c: Result<Credential, ApiError>| match c {
            Ok(Credential::Token(t)) => t,
            _ => panic!("not a token"),
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("bearer, abc.def"));
        assert_eq!(token(credential(&headers, &HashMap::new())), "abc.def");
        assert!(offers_bearer(&headers));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc.def"));
        assert_eq!(token(credential(&headers, &HashMap::new())), "abc.def");
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer other"));
        assert!(matches!(credential(&headers, &HashMap::new()), Err(ApiError::Denied { .. })));
        let query = HashMap::from([("ticket".to_owned(), "pct_x".to_owned())]);
        assert!(matches!(credential(&HeaderMap::new(), &query), Ok(Credential::Ticket(t)) if t == "pct_x"));
        let mut bearer_and_ticket = HeaderMap::new();
        bearer_and_ticket.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer tok"));
        assert!(matches!(credential(&bearer_and_ticket, &query), Err(ApiError::Denied { .. })));
        let mut lone = HeaderMap::new();
        lone.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("bearer"));
        assert!(matches!(credential(&lone, &HashMap::new()), Err(ApiError::Denied { .. })));
        assert!(matches!(credential(&HeaderMap::new(), &HashMap::new()), Err(ApiError::TokenMissing)));
    }
}
