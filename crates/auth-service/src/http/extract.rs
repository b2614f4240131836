//! Extractors: JSON bodies that fail as problem+json, the caller's address and user agent,
//! and the authenticated principal.

use std::net::SocketAddr;

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::{
    error::Error,
    service::{AuthService, ClientMeta, Principal},
};

/// `axum::Json` with Portcullis' rejections: 415 for another content type, 413 over the
/// body limit, 400 `malformed_body` for anything that is not the expected JSON object.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| {
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => {
                Error::MalformedBody(format!("the body does not have the expected shape: {e}"))
            }
            Category::Syntax | Category::Eof | Category::Io => Error::MalformedBody(format!(
                "the body is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            )),
        }
    })
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

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AuthService,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| Error::internal("the server was started without peer addresses"))?;
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        let ip = state.config().trusted_proxies.client_ip(peer, forwarded);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Self { ip, user_agent })
    }
}

/// The bearer credential of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Error> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(Error::TokenMissing)?;
    let value = value
        .to_str()
        .map_err(|_| Error::TokenInvalid("the authorization header is not text"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::TokenMissing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::TokenInvalid("the bearer token is empty"));
    }
    Ok(token)
}

impl FromRequestParts<AuthService> for Principal {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AuthService,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers)?;
        state.authenticate(token).await
    }
}
