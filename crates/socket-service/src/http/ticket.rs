//! `POST /ticket`: mints a one-time connection ticket from the context the gateway signed,
//! for browsers that cannot set headers on a WebSocket (the URL then carries nothing reusable).

use auth_contract::extract::VerifiedContext;
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
