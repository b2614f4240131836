//! `POST /sdk/session`: a client's backend opens an SDK session for one of its own users with
//! an API key (`X-API-Key` or `Authorization: Bearer pck_…`), and its bodies (the answer is
//! also what refreshing an SDK session returns).

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::Error,
    http::{
        error::Problem,
        extract::{ApiJson, ApiKeyHeader, origin},
    },
    service::{AuthService, ClientMeta, SdkTokens},
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct SdkSessionRequest {
    pub external_user_id: String,
    /// Default: all of the key's scopes.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SdkSessionResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

impl From<SdkTokens> for SdkSessionResponse {
    fn from(t: SdkTokens) -> Self {
        Self {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            token_type: "Bearer",
            expires_in: t.expires_in,
        }
    }
}

/// Opens an SDK session: the key's client IP allowlist and origins apply. 401 is `token_missing`,
/// `key_invalid` or `key_revoked`; 403 `ip_not_allowed`, `origin_not_allowed` or
/// `insufficient_scope`.
#[utoipa::path(post, path = "/sdk/session", tag = "sdk", request_body = SdkSessionRequest,
    params(("X-API-Key" = Option<String>, Header, description = "the API key (or Authorization: Bearer pck_…)")),
    responses(
        (status = 201, body = SdkSessionResponse),
        (status = 401, response = Problem),
        (status = 403, response = Problem),
        (status = 422, response = Problem),
    ),
)]
pub async fn create(
    State(service): State<AuthService>,
    meta: ClientMeta,
    ApiKeyHeader(key): ApiKeyHeader,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SdkSessionRequest>,
) -> Result<(StatusCode, Json<SdkSessionResponse>), Error> {
    let origin = origin(&headers);
    let tokens = service
        .create_sdk_session(&key, &body.external_user_id, body.scopes.as_deref(), Some(meta.ip), origin.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(SdkSessionResponse::from(tokens))))
}
