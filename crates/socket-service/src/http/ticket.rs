//! `POST /ticket`: mints a one-time connection ticket from the context the gateway signed,
//! for browsers that cannot set headers on a WebSocket (the URL then carries nothing reusable).
//!
//! A ticket is minted only from a credential the auth service has just validated (SPEC §7):
//! the gateway forwards the caller's `Authorization` or `X-API-Key` next to the signed
//! context, the credential is validated (usually a cache hit) and must name the signed
//! identity, and its full context (expiry, credential id, session) is what the ticket holds.
//! A ticket's connection then gets `auth.expiring` and 4401 like any other, and is closed when
//! that very credential is revoked. Without a credential there is no ticket (401); with the
//! auth service unreachable there is none either (503): the signed context alone has no
//! expiry and nothing to revoke.

use auth_contract::{AuthContext, Presented, extract::VerifiedContext};
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
    service::SocketService,
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
    let presented = Presented::from_headers(&headers)
        .map_err(|err| ApiError::Denied { code: err.code(), message: err.to_string() }.at(&request_id))?;
    // The gateway already checked IP and origin for this request; the key is asked again
    // with the origin the ticket will be bound to.
    let validated = match presented {
        Presented::Token(token) => service.auth().validate(token, None, None).await,
        Presented::ApiKey(key) => service.auth().validate_api_key(key, None, origin.as_deref()).await,
    };
    let context = match validated {
        Ok(full) if same_identity(&full, &context) => (*full).clone(),
        Ok(_) => return Err(ApiError::Forbidden("the credential does not match the signed context").at(&request_id)),
        Err(err) => return Err(ApiError::from(err).at(&request_id)),
    };
    if service.hub().revoked_recently(&context) {
        return Err(revoked().at(&request_id));
    }
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

/// A ticket or credential that a revocation of the last minute names.
pub(crate) fn revoked() -> ApiError {
    ApiError::Denied { code: auth_contract::ErrorCode::TokenRevoked, message: "the credential was revoked".to_owned() }
}

/// The same caller: kind, subject, session and tenant agree.
fn same_identity(full: &AuthContext, signed: &AuthContext) -> bool {
    full.kind == signed.kind
        && full.subject == signed.subject
        && full.session_id == signed.session_id
        && full.tenant_id == signed.tenant_id
}
