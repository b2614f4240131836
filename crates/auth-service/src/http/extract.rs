//! Extractors: JSON bodies that fail as problem+json, the caller's address and user agent,
//! and the authenticated principal.

use std::net::SocketAddr;

use axum::{
    body::Bytes,
    extract::{
        ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request,
        rejection::{PathRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::{
    error::Error,
    http::dto::PageQuery,
    service::{AuthService, ClientMeta, Principal, UserPrincipal},
};

/// `axum::Json` with Portcullis' rejections: 415 for another content type, 413 over the
/// body limit, 400 `malformed_body` for anything that is not the expected JSON object.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

pub use platform::media::is_json;

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    platform::media::parse_json(bytes).map_err(|e| Error::MalformedBody(e.to_string()))
}

/// Reads the whole body within the route's limit.
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::BodyTooLarge
        } else {
            Error::MalformedBody("the body could not be read".to_owned())
        }
    })
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl FromRequestParts<AuthService> for ClientMeta {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AuthService) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| Error::internal("the server was started without peer addresses"))?;
        let ip = state.config().trusted_proxies.client_ip_from_headers(peer, &parts.headers);
        let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Self { ip, user_agent })
    }
}

/// The one credential a request presents (`Authorization: Bearer` or `X-API-Key`, read by
/// the contract's one reader, SPEC §6).
pub fn credential(headers: &HeaderMap) -> Result<&str, Error> {
    Ok(auth_contract::Presented::from_headers(headers)?.secret())
}

/// The Bearer token of `Authorization` alone, where `X-API-Key` carries something else.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Error> {
    Ok(auth_contract::credential::bearer(headers)?)
}

impl FromRequestParts<AuthService> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AuthService) -> Result<Self, Self::Rejection> {
        let meta = ClientMeta::from_request_parts(parts, state).await?;
        let token = credential(&parts.headers)?;
        state.limit_failures(meta.ip, state.authenticate(token)).await
    }
}

/// An id from the path; anything that is not a UUID (or not even text) names nothing the
/// caller owns, so it is 404 like any other unknown id.
pub fn path_id(raw: &str) -> Result<uuid::Uuid, Error> {
    uuid::Uuid::parse_str(raw).map_err(|_| Error::NotFound)
}

pub fn path_param(param: Result<Path<String>, PathRejection>) -> Result<uuid::Uuid, Error> {
    let Path(raw) = param.map_err(|_| Error::NotFound)?;
    path_id(&raw)
}

pub fn path_pair(param: Result<Path<(String, String)>, PathRejection>) -> Result<(uuid::Uuid, uuid::Uuid), Error> {
    let Path((a, b)) = param.map_err(|_| Error::NotFound)?;
    Ok((path_id(&a)?, path_id(&b)?))
}

/// `limit` (1..=max, default) and the raw `cursor` of a paginated listing.
pub fn page(
    query: Result<Query<PageQuery>, QueryRejection>,
    default: u32,
    max: u32,
) -> Result<(u32, Option<String>), Error> {
    let Query(query) = query.map_err(|_| Error::validation("query", "is not a valid query string"))?;
    let limit = match query.limit.as_deref() {
        None => default,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| Error::validation("limit", format!("must be a number from 1 to {max}")))?,
    };
    Ok((limit, query.cursor))
}

/// A JSON body that may be absent: an empty body is `T::default()`, anything else must be
/// JSON of the right shape.
pub async fn optional_json<T: DeserializeOwned + Default>(request: Request) -> Result<T, Error> {
    let json = is_json(request.headers());
    let bytes = body_bytes(request, &()).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else if json {
        parse_json(&bytes)
    } else {
        Err(Error::UnsupportedMediaType)
    }
}

/// The API key of a request: `X-API-Key`, or `Authorization: Bearer pck_…`.
pub fn api_key(headers: &HeaderMap) -> Result<String, Error> {
    credential(headers).map(str::to_owned)
}

/// The API key, extracted before the body is read, so a missing key is refused first.
#[derive(Debug)]
pub struct ApiKeyHeader(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiKeyHeader {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        api_key(&parts.headers).map(Self)
    }
}

/// The `Origin` header, if the request carries one (`null` included: it matches nothing).
pub fn origin(headers: &HeaderMap) -> Option<String> {
    headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null").to_owned())
}

impl FromRequestParts<AuthService> for UserPrincipal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AuthService) -> Result<Self, Self::Rejection> {
        let meta = ClientMeta::from_request_parts(parts, state).await?;
        let token = credential(&parts.headers)?;
        state.limit_failures(meta.ip, state.authenticate_user(token)).await
    }
}
