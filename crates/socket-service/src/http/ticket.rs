//! `POST /ticket`: mints a one-time connection ticket from the context the gateway signed,
//! for browsers that cannot set headers on a WebSocket (the URL then carries nothing reusable).
//!
//! The signed headers carry who the caller is but not when their token expires. The gateway
//! forwards the caller's `Authorization` header too, so a Bearer token there is validated
//! (usually a cache hit) and, when it names the same identity, its fuller context (expiry,
//! credential id) is what the ticket holds: a ticket's connection then gets `auth.expiring`
//! and 4401 like any other, and is closed when that very token is revoked.

use auth_contract::{AuthContext, ClientError, Presented, extract::VerifiedContext};
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use platform::origin::Origin;
use serde_json::json;

use super::{ApiError, Problem, RequestId};
use crate::{
    app::SocketService,
    store::{TICKET_TTL, Ticket, new_ticket},
};

pub async fn mint(
    State(service): State<SocketService>,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    VerifiedContext(context): VerifiedContext,
) -> Result<Response, Problem> {
    // The gateway checked this origin against the tenant's list when it authenticated the
    // request; a connection with a ticket must come from the same one.
    let origin = match headers.get(header::ORIGIN) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| Origin::parse(text).ok())
                .ok_or_else(|| ApiError::OriginNotAllowed.at(&request_id))?
                .as_str()
                .to_owned(),
        ),
    };
    let bearer = Presented::from_headers(&headers).ok().and_then(|p| match p {
        Presented::Token(token) => Some(token.to_owned()),
        Presented::ApiKey(_) => None,
    });
    let context = match bearer {
        Some(token) => match service.auth().validate(&token, None, None).await {
            Ok(full) if same_identity(&full, &context) => (*full).clone(),
            Ok(_) => return Err(ApiError::Forbidden("the token does not match the signed context").at(&request_id)),
            Err(err @ ClientError::Denied { .. }) => return Err(ApiError::from(err).at(&request_id)),
            // The signed context stands on its own; only its expiry is unknown.
            Err(ClientError::Unavailable(_)) => context,
        },
        None => context,
    };
    let ticket = new_ticket().map_err(|e| ApiError::Internal(e.to_string()).at(&request_id))?;
    service
        .inner
        .deps
        .tickets
        .put(&ticket, &Ticket { context, origin }, TICKET_TTL)
        .await
        .map_err(|e| ApiError::from(e).at(&request_id))?;
    Ok(Json(json!({"ticket": ticket, "expires_in": TICKET_TTL.as_secs()})).into_response())
}

/// The same caller: kind, subject, session and tenant agree.
fn same_identity(full: &AuthContext, signed: &AuthContext) -> bool {
    full.kind == signed.kind
        && full.subject == signed.subject
        && full.session_id == signed.session_id
        && full.tenant_id == signed.tenant_id
}
