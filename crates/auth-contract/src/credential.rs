//! The one reader of the credential a request presents (SPEC §6), used at every entrance:
//! `Authorization: Bearer` (the scheme in any letter case), `X-API-Key`, and on WebSocket
//! handshakes the `Sec-WebSocket-Protocol` pair `bearer, <token>`. Two credentials that differ
//! (two `Authorization` lines, a Bearer and an `X-API-Key`, a header and the subprotocol) are
//! refused, never "first wins"; an empty one is a missing one.

use http::{HeaderMap, header};

use crate::ErrorCode;

/// The prefix of a client API key; a Bearer token carrying it is an API key too.
pub const API_KEY_PREFIX: &str = "pck_";
/// The prefix of a personal access token.
pub const PAT_PREFIX: &str = "pcp_";
/// The prefix of a refresh token.
pub const REFRESH_PREFIX: &str = "pcr_";
/// The prefix of a service token.
pub const SERVICE_PREFIX: &str = "pcs_";
/// The prefix of a one-time socket ticket.
pub const TICKET_PREFIX: &str = "pct_";
/// Cookies whose names start with this carry credentials (the refresh cookie): the gateway
/// strips them before configured upstreams.
pub const COOKIE_PREFIX: &str = "pc_";

/// The opaque (non-JWT) credential kinds, told apart by their prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opaque {
    Refresh,
    Pat,
    ApiKey,
    Service,
    Ticket,
}

impl Opaque {
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Refresh => REFRESH_PREFIX,
            Self::Pat => PAT_PREFIX,
            Self::ApiKey => API_KEY_PREFIX,
            Self::Service => SERVICE_PREFIX,
            Self::Ticket => TICKET_PREFIX,
        }
    }

    /// The kind a credential's prefix names; `None` for JWTs and anything else.
    pub fn of(credential: &str) -> Option<Self> {
        [Self::Refresh, Self::Pat, Self::ApiKey, Self::Service, Self::Ticket]
            .into_iter()
            .find(|kind| credential.starts_with(kind.prefix()))
    }
}

/// The prefixes of the personal access tokens of the system a team ran before Portcullis
/// (seed 002's backend, whose `tokenService.ts` issued `af_live_` tokens and documented
/// `af_test_` ones). `cargo xtask import-pats` imports those tokens by their hash.
pub const LEGACY_PAT_PREFIXES: [&str; 2] = ["af_live_", "af_test_"];
/// What follows a legacy prefix: exactly this many base62 characters (`0-9A-Za-z`).
pub const LEGACY_PAT_BODY_LEN: usize = 32;

/// Whether `token` has the legacy shape: a [`LEGACY_PAT_PREFIXES`] prefix, then
/// [`LEGACY_PAT_BODY_LEN`] base62 characters, nothing else (40 characters in all).
fn is_legacy_pat(token: &str) -> bool {
    LEGACY_PAT_PREFIXES.iter().any(|prefix| {
        token
            .strip_prefix(prefix)
            .is_some_and(|body| body.len() == LEGACY_PAT_BODY_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric()))
    })
}

/// What a presented token looks like before anything is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Three base64url parts separated by dots: an access, SDK or service JWT.
    Jwt,
    /// A Portcullis opaque credential, by its prefix.
    Opaque(Opaque),
    /// A personal access token of the system a team ran before (no Portcullis prefix; see
    /// [`LEGACY_PAT_PREFIXES`]): the operations tooling imports those by their hash, and the
    /// auth service accepts them until `LEGACY_PAT_ACCEPT_UNTIL`.
    LegacyPat,
}

impl Shape {
    /// `None` for text no credential looks like (refused as `token_invalid` unread).
    pub fn of(token: &str) -> Option<Self> {
        if let Some(kind) = Opaque::of(token) {
            return Some(Self::Opaque(kind));
        }
        if is_legacy_pat(token) {
            return Some(Self::LegacyPat);
        }
        let base64url = |part: &str| part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let parts: Vec<&str> = token.split('.').collect();
        let jwt = parts.len() == 3 && parts[..2].iter().all(|p| !p.is_empty()) && parts.iter().all(|p| base64url(p));
        jwt.then_some(Self::Jwt)
    }
}

/// The header an API key may also come in.
pub const API_KEY_HEADER: &str = "x-api-key";
/// The subprotocol that marks the next one as a Bearer token, on WebSocket handshakes.
pub const BEARER_SUBPROTOCOL: &str = "bearer";

/// What a request presents, borrowed from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// A token for `Validate`: access token, SDK token, PAT or service token.
    Token(&'a str),
    /// A client API key for `ValidateApiKey`.
    ApiKey(&'a str),
}

impl<'a> Presented<'a> {
    pub fn secret(&self) -> &'a str {
        match *self {
            Self::Token(secret) | Self::ApiKey(secret) => secret,
        }
    }

    /// The credential of an ordinary request: `Authorization` and `X-API-Key`.
    pub fn from_headers(headers: &'a HeaderMap) -> Result<Self, CredentialError> {
        read(headers, false)
    }

    /// The credential of a WebSocket handshake: also the `bearer, <token>` subprotocol pair.
    pub fn from_upgrade_headers(headers: &'a HeaderMap) -> Result<Self, CredentialError> {
        read(headers, true)
    }
}

/// Why no usable credential was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no credential: send Authorization: Bearer <token> or X-API-Key")]
    Missing,
    #[error("the Authorization header must use the Bearer scheme")]
    NotBearer,
    #[error("the credential is empty")]
    Empty,
    #[error("the request presents more than one credential, and they differ")]
    Conflict,
    #[error("a credential header is not text")]
    NotText,
}

impl CredentialError {
    /// The wire code: a missing, empty or non-Bearer credential is `token_missing`; a
    /// conflicting or unreadable one is `token_invalid`.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::Missing | Self::NotBearer | Self::Empty => ErrorCode::TokenMissing,
            Self::Conflict | Self::NotText => ErrorCode::TokenInvalid,
        }
    }
}

/// The Bearer token of `Authorization` alone, for entrances where `X-API-Key` carries
/// something else (forward-auth's key check names the caller's service token in
/// `Authorization`). The same rules: several lines that differ conflict, an empty token is
/// missing.
pub fn bearer(headers: &HeaderMap) -> Result<&str, CredentialError> {
    let mut chosen: Option<&str> = None;
    for value in headers.get_all(header::AUTHORIZATION) {
        let token = bearer_value(value.to_str().map_err(|_| CredentialError::NotText)?)?;
        if chosen.is_some_and(|c| c != token) {
            return Err(CredentialError::Conflict);
        }
        chosen = Some(token);
    }
    chosen.ok_or(CredentialError::Missing)
}

/// The token of one `Authorization` value (or gRPC `authorization` metadata).
pub fn bearer_value(value: &str) -> Result<&str, CredentialError> {
    match bearer_of(value) {
        Found::Bearer("") => Err(CredentialError::Empty),
        Found::Bearer(token) => Ok(token),
        Found::ApiKey(_) | Found::OtherScheme => Err(CredentialError::NotBearer),
    }
}

/// One place a credential was found, before the places are compared.
enum Found<'a> {
    Bearer(&'a str),
    ApiKey(&'a str),
    OtherScheme,
}

fn bearer_of(value: &str) -> Found<'_> {
    let value = value.trim();
    let (scheme, token) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("bearer") { Found::Bearer(token.trim()) } else { Found::OtherScheme }
}

/// `bearer, <token>` among the offered subprotocols, if present.
fn subprotocol_token(headers: &HeaderMap) -> Result<Option<&str>, CredentialError> {
    let mut offered = Vec::new();
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let value = value.to_str().map_err(|_| CredentialError::NotText)?;
        offered.extend(value.split(',').map(str::trim));
    }
    let Some(at) = offered.iter().position(|p| p.eq_ignore_ascii_case(BEARER_SUBPROTOCOL)) else {
        return Ok(None);
    };
    Ok(Some(offered.get(at + 1).copied().unwrap_or_default()))
}

fn read(headers: &HeaderMap, subprotocol: bool) -> Result<Presented<'_>, CredentialError> {
    let mut found = Vec::new();
    for value in headers.get_all(header::AUTHORIZATION) {
        found.push(bearer_of(value.to_str().map_err(|_| CredentialError::NotText)?));
    }
    for value in headers.get_all(API_KEY_HEADER) {
        found.push(Found::ApiKey(value.to_str().map_err(|_| CredentialError::NotText)?.trim()));
    }
    if subprotocol && let Some(token) = subprotocol_token(headers)? {
        found.push(Found::Bearer(token));
    }
    let first = match found.as_slice() {
        [] => return Err(CredentialError::Missing),
        [Found::OtherScheme] => return Err(CredentialError::NotBearer),
        [first, ..] => first,
    };
    fn secret<'h>(found: &Found<'h>) -> Option<&'h str> {
        match *found {
            Found::Bearer(s) | Found::ApiKey(s) => Some(s),
            Found::OtherScheme => None,
        }
    }
    let chosen = secret(first).ok_or(CredentialError::Conflict)?;
    if found.iter().any(|f| secret(f) != Some(chosen)) {
        return Err(CredentialError::Conflict);
    }
    if chosen.is_empty() {
        return Err(CredentialError::Empty);
    }
    let api_key = chosen.starts_with(API_KEY_PREFIX) || found.iter().any(|f| matches!(f, Found::ApiKey(_)));
    Ok(if api_key { Presented::ApiKey(chosen) } else { Presented::Token(chosen) })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn shapes_tell_jwts_prefixed_and_legacy_tokens_apart() {
        assert_eq!(Shape::of("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln"), Some(Shape::Jwt));
        assert_eq!(Shape::of("pcp_0123456789abcdef"), Some(Shape::Opaque(Opaque::Pat)));
        assert_eq!(Shape::of("pck_x"), Some(Shape::Opaque(Opaque::ApiKey)));
        let body = "0123456789ABCDEFGHIJKLMNOPQRSTUv";
        assert_eq!(Shape::of(&format!("af_live_{body}")), Some(Shape::LegacyPat));
        assert_eq!(Shape::of(&format!("af_test_{body}")), Some(Shape::LegacyPat));
        for garbage in [
            "",
            "short",
            "a.b",
            "a..c",
            "has space in it, long enough",
            &"x".repeat(257),
            "tok\u{e9}n-but-long-enough-here",
            // Other vendors' tokens and near misses of the legacy shape are nothing.
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            &format!("af_live_{}", &body[1..]),
            &format!("af_live_{body}0"),
            &format!("af_live_{}-", &body[1..]),
            &format!("AF_LIVE_{body}"),
            &format!("af_prod_{body}"),
            &format!(" af_live_{body}"),
            &format!("af_live_{}\u{e9}", &body[2..]),
            body,
        ] {
            assert_eq!(Shape::of(garbage), None, "{garbage}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn read_plain(pairs: &[(&str, &str)]) -> Result<Presented<'static>, CredentialError> {
        let map = Box::leak(Box::new(headers(pairs)));
        Presented::from_headers(map)
    }

    #[test]
    fn authorization_alone() {
        let map = headers(&[("authorization", "bEaReR  tok "), ("x-api-key", "pck_other")]);
        assert_eq!(bearer(&map), Ok("tok"), "X-API-Key is not read here");
        assert_eq!(bearer(&headers(&[])), Err(CredentialError::Missing));
        assert_eq!(bearer(&headers(&[("authorization", "Basic x")])), Err(CredentialError::NotBearer));
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), Err(CredentialError::Empty));
        let two = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(bearer(&two), Err(CredentialError::Conflict));
        let same = headers(&[("authorization", "Bearer a"), ("authorization", "bearer a")]);
        assert_eq!(bearer(&same), Ok("a"));
        assert_eq!(bearer_value("Bearer\tpcs_x"), Ok("pcs_x"));
    }

    #[test]
    fn prefixes_name_the_opaque_kinds() {
        assert_eq!(Opaque::of("pck_abc"), Some(Opaque::ApiKey));
        assert_eq!(Opaque::of("pcp_abc"), Some(Opaque::Pat));
        assert_eq!(Opaque::of("pct_abc").map(Opaque::prefix), Some(TICKET_PREFIX));
        assert_eq!(Opaque::of("eyJhbGciOi.x.y"), None);
        assert_eq!(Opaque::of("PCK_abc"), None, "prefixes are exact");
    }

    #[test]
    fn schemes_and_kinds() {
        assert_eq!(read_plain(&[("authorization", "Bearer abc")]), Ok(Presented::Token("abc")));
        assert_eq!(read_plain(&[("authorization", "bearer abc")]), Ok(Presented::Token("abc")));
        assert_eq!(read_plain(&[("authorization", "BEARER  abc ")]), Ok(Presented::Token("abc")));
        assert_eq!(read_plain(&[("authorization", "Bearer pck_k")]), Ok(Presented::ApiKey("pck_k")));
        assert_eq!(read_plain(&[("x-api-key", " pck_k ")]), Ok(Presented::ApiKey("pck_k")));
        // The same key twice is one credential.
        assert_eq!(
            read_plain(&[("x-api-key", "pck_k"), ("authorization", "Bearer pck_k")]),
            Ok(Presented::ApiKey("pck_k"))
        );
    }

    #[test]
    fn missing_empty_and_conflicting() {
        assert_eq!(read_plain(&[]), Err(CredentialError::Missing));
        assert_eq!(read_plain(&[("authorization", "Basic dXNlcjpwYXNz")]), Err(CredentialError::NotBearer));
        assert_eq!(read_plain(&[("authorization", "Bearer ")]), Err(CredentialError::Empty));
        assert_eq!(read_plain(&[("authorization", "Bearer")]), Err(CredentialError::Empty));
        assert_eq!(read_plain(&[("x-api-key", "")]), Err(CredentialError::Empty));
        for conflict in [
            vec![("authorization", "Bearer a"), ("authorization", "Bearer b")],
            vec![("authorization", "Bearer a"), ("x-api-key", "pck_b")],
            vec![("x-api-key", "pck_a"), ("x-api-key", "pck_b")],
            vec![("authorization", "Basic x"), ("x-api-key", "pck_b")],
            vec![("authorization", "Bearer a"), ("authorization", "Bearer ")],
        ] {
            assert_eq!(read_plain(&conflict), Err(CredentialError::Conflict), "{conflict:?}");
        }
        assert_eq!(CredentialError::Conflict.code(), ErrorCode::TokenInvalid);
        assert_eq!(CredentialError::Empty.code(), ErrorCode::TokenMissing);
    }

    #[test]
    fn the_subprotocol_counts_only_on_upgrades() {
        let map = headers(&[("sec-websocket-protocol", "bearer, tok")]);
        assert_eq!(Presented::from_upgrade_headers(&map), Ok(Presented::Token("tok")));
        assert_eq!(Presented::from_headers(&map), Err(CredentialError::Missing));
        let both = headers(&[("sec-websocket-protocol", "bearer, tok"), ("authorization", "Bearer other")]);
        assert_eq!(Presented::from_upgrade_headers(&both), Err(CredentialError::Conflict));
        let same = headers(&[("sec-websocket-protocol", "bearer, tok"), ("authorization", "Bearer tok")]);
        assert_eq!(Presented::from_upgrade_headers(&same), Ok(Presented::Token("tok")));
        let empty = headers(&[("sec-websocket-protocol", "bearer")]);
        assert_eq!(Presented::from_upgrade_headers(&empty), Err(CredentialError::Empty));
    }
}
