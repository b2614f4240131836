//! Signed context headers: the gateway turns an [`AuthContext`] into `X-…` headers signed with
//! `CONTEXT_SIGNING_SECRET`, and a downstream service verifies them, so it never parses a token
//! and cannot be fooled by headers a client wrote itself.
//!
//! The wire format (SPEC §5) is pinned by a test against a hand-computed HMAC. The signature is
//! `X-Context-Signature: v1=<lowercase hex HMAC-SHA256>` over these lines joined by `\n`, an
//! absent header contributing an empty line:
//!
//! ```text
//! v1
//! <X-Context-Timestamp>
//! <method>
//! <path with query>
//! <X-Request-Id>
//! <X-Auth-Kind>
//! <X-User-Id>
//! <X-Tenant-Id>
//! <X-Client-Id>
//! <X-Session-Id>
//! <X-Scopes>
//! <X-Role>
//! ```
//!
//! What the signature does not cover: the request body, the host and any other header. A
//! signed set of headers can therefore be replayed for up to [`MAX_AGE_SECONDS`] against the
//! same method and path, with a different body, by anyone who saw it (for instance another
//! upstream). Keep the secret only on the gateway and on services that must verify.

use std::fmt;
use std::sync::Arc;

use hmac::digest::{Digest, KeyInit};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use sha2::Sha256;

use crate::codes::ErrorCode;
use crate::context::{AuthContext, Kind};
use crate::role::Role;
use crate::scope::Scopes;

type HmacSha256 = Hmac<Sha256>;

pub const X_AUTH_KIND: HeaderName = HeaderName::from_static("x-auth-kind");
pub const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
pub const X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");
pub const X_CLIENT_ID: HeaderName = HeaderName::from_static("x-client-id");
pub const X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
pub const X_SCOPES: HeaderName = HeaderName::from_static("x-scopes");
pub const X_ROLE: HeaderName = HeaderName::from_static("x-role");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_CONTEXT_TIMESTAMP: HeaderName = HeaderName::from_static("x-context-timestamp");
pub const X_CONTEXT_SIGNATURE: HeaderName = HeaderName::from_static("x-context-signature");

/// Every header a gateway must remove from a client's request before forwarding it. The
/// gateway keeps (or assigns) `X-Request-Id` instead, so it is not listed; it must still
/// `insert` (replace) the request id it signed rather than append to a client's.
pub const CONTEXT_HEADERS: [HeaderName; 9] = [
    X_AUTH_KIND,
    X_USER_ID,
    X_TENANT_ID,
    X_CLIENT_ID,
    X_SESSION_ID,
    X_SCOPES,
    X_ROLE,
    X_CONTEXT_TIMESTAMP,
    X_CONTEXT_SIGNATURE,
];

/// The headers whose values are signed, in the order their lines appear in the signed text
/// (after `v1`, the timestamp, the method and the path).
const SIGNED_HEADERS: [HeaderName; 8] =
    [X_REQUEST_ID, X_AUTH_KIND, X_USER_ID, X_TENANT_ID, X_CLIENT_ID, X_SESSION_ID, X_SCOPES, X_ROLE];

/// How far, in seconds, a context timestamp may lie from the verifier's clock, either way.
pub const MAX_AGE_SECONDS: i64 = 60;

const VERSION: &str = "v1";
const SIGNATURE_PREFIX: &str = "v1=";

/// The `CONTEXT_SIGNING_SECRET`, held as the keyed HMAC state so it is derived once at start-up
/// and cloned cheaply per request, with the previous secrets a rotation still accepts
/// (`CONTEXT_SIGNING_PREVIOUS_SECRETS`): it signs with the current one and verifies with any.
/// Its `Debug` never shows a secret.
#[derive(Clone)]
pub struct ContextKey {
    mac: Arc<HmacSha256>,
    previous: Arc<[HmacSha256]>,
}

impl ContextKey {
    /// Any length is accepted, as HMAC allows; the service's configuration should refuse a
    /// short or empty secret before it gets here.
    pub fn new(secret: &str) -> Self {
        Self { mac: Arc::new(Self::keyed(secret)), previous: Arc::new([]) }
    }

    /// Signs with `current`; [`verify_context`] also accepts a signature by any of `previous`,
    /// so every service can be restarted with a new secret one at a time.
    pub fn with_previous<'a>(current: &str, previous: impl IntoIterator<Item = &'a str>) -> Self {
        let previous: Vec<HmacSha256> = previous.into_iter().map(Self::keyed).collect();
        Self { mac: Arc::new(Self::keyed(current)), previous: previous.into() }
    }

    fn keyed(secret: &str) -> HmacSha256 {
        // RFC 2104 §2: a key longer than the hash block is hashed first, a shorter one is padded
        // with zeros to the block. Doing that here lets us use the fixed-size, infallible
        // constructor instead of carrying an error branch that can never be taken.
        let bytes = secret.as_bytes();
        let mut block = hmac::digest::Key::<HmacSha256>::default();
        if bytes.len() > block.len() {
            let digest = Sha256::digest(bytes);
            block[..digest.len()].copy_from_slice(&digest);
        } else {
            block[..bytes.len()].copy_from_slice(bytes);
        }
        let mac = <HmacSha256 as KeyInit>::new(&block);
        // Do not leave a plain copy of the key on the stack for longer than needed.
        block.iter_mut().for_each(|b| *b = 0);
        mac
    }

    fn mac(&self) -> HmacSha256 {
        (*self.mac).clone()
    }
}

impl fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContextKey(<redacted>)")
    }
}

/// Why a context could not be turned into headers. These are bugs or bad data upstream of the
/// gateway (an id that is not a valid header value), never a client's fault: answer 500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the value for {header} cannot be sent as a header")]
    InvalidValue { header: HeaderName },
    #[error("a {kind} context needs a subject for X-User-Id")]
    MissingSubject { kind: Kind },
    #[error("an api_key context needs a client id")]
    MissingClient,
}

/// Why signed context headers were refused. Every variant answers 401; only [`Self::Expired`]
/// is `token_expired`, the rest are `token_invalid` (see [`ContextError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("the request carries no X-Context-Signature")]
    MissingSignature,
    #[error("the request carries no X-Context-Timestamp")]
    MissingTimestamp,
    #[error("X-Context-Timestamp is not unix seconds")]
    MalformedTimestamp,
    #[error("X-Context-Signature is not v1=<64 lowercase hex digits>")]
    MalformedSignature,
    #[error("X-Context-Signature does not match the request")]
    SignatureMismatch,
    #[error("the context was signed {age} s ago, more than {MAX_AGE_SECONDS} s")]
    Expired { age: i64 },
    #[error("the context is dated {ahead} s in the future, more than {MAX_AGE_SECONDS} s")]
    FromFuture { ahead: i64 },
    #[error("the request carries no X-Auth-Kind")]
    MissingKind,
    #[error("X-Auth-Kind {0:?} is not a known kind")]
    UnknownKind(String),
    #[error("{header} is not valid UTF-8")]
    NotUtf8 { header: HeaderName },
    #[error("{header} appears more than once")]
    Duplicated { header: HeaderName },
    #[error("the signed headers do not describe a {kind} context: {reason}")]
    Inconsistent { kind: Kind, reason: &'static str },
}

impl ContextError {
    /// The stable error code this rejection answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Expired { .. } => ErrorCode::TokenExpired,
            _ => ErrorCode::TokenInvalid,
        }
    }
}

/// What a verified set of context headers says. Everything here was covered by the signature.
///
/// Not recoverable from the headers (they are not sent): the credential id, the credential's
/// own expiry and the tenant's rate limit; [`Self::into_auth_context`] leaves them `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHeaders {
    pub kind: Kind,
    /// `X-User-Id` as sent: the user id (user, pat), `sdk:{client_id}:{external_id}` (sdk), the
    /// service name (service); always `None` for api_key.
    pub user_id: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub session_id: Option<String>,
    pub scopes: Scopes,
    pub role: Option<Role>,
    pub request_id: Option<String>,
    /// Unix seconds at which the gateway signed.
    pub timestamp: i64,
}

impl VerifiedHeaders {
    /// The context as the auth service described it, as far as the headers carry it: `subject`
    /// is `X-User-Id` for user, pat, sdk and service and `client:{client_id}` for api_key (the
    /// auth service's own subjects); `user_id` is set only for user and pat, the kinds whose
    /// `X-User-Id` is a platform user.
    pub fn into_auth_context(self) -> AuthContext {
        let (subject, user_id) = match self.kind {
            Kind::User | Kind::Pat => (self.user_id.clone().unwrap_or_default(), self.user_id),
            Kind::Sdk | Kind::Service => (self.user_id.unwrap_or_default(), None),
            Kind::ApiKey => (self.client_id.as_deref().map(|c| format!("client:{c}")).unwrap_or_default(), None),
        };
        AuthContext {
            subject,
            kind: self.kind,
            user_id,
            tenant_id: self.tenant_id,
            client_id: self.client_id,
            session_id: self.session_id,
            credential_id: None,
            role: self.role,
            scopes: self.scopes,
            expires_at: None,
            rate_limit: None,
        }
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

/// The `X-User-Id` value for a context (SPEC §5).
fn user_header(ctx: &AuthContext) -> Result<Option<&str>, SignError> {
    let value = match ctx.kind {
        // The proto's subject is the user id for these kinds, so it stands in if user_id is unset.
        Kind::User | Kind::Pat => ctx.user_id.as_deref().unwrap_or(&ctx.subject),
        Kind::Sdk | Kind::Service => &ctx.subject,
        Kind::ApiKey => return Ok(None),
    };
    if value.is_empty() {
        return Err(SignError::MissingSubject { kind: ctx.kind });
    }
    Ok(Some(value))
}

/// The text the signature covers: see the module documentation. (The signer and the verifier
/// feed it to the MAC piece by piece; the tests build it whole.)
#[cfg(test)]
fn signing_input(timestamp: &str, method: &str, path_and_query: &str, values: &[Option<&str>; 8]) -> String {
    let mut text = String::with_capacity(128);
    for line in [VERSION, timestamp, method, path_and_query] {
        text.push_str(line);
        text.push('\n');
    }
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(value.unwrap_or(""));
    }
    text
}

/// [`signing_input`] fed to the MAC without building the text: the signer and the verifier
/// both go through here. `values` are the [`SIGNED_HEADERS`] values in order, an absent one
/// empty.
fn feed_signing_input<'a>(
    mac: &mut HmacSha256,
    timestamp: &str,
    method: &str,
    path_and_query: &str,
    values: impl IntoIterator<Item = &'a [u8]>,
) {
    for line in [VERSION, timestamp, method, path_and_query] {
        mac.update(line.as_bytes());
        mac.update(b"\n");
    }
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            mac.update(b"\n");
        }
        mac.update(value);
    }
}

/// Signs `ctx` for a request forwarded as `method path_and_query` at `timestamp` (unix
/// seconds), returning every context header, `X-Request-Id` included. The caller must first
/// remove [`CONTEXT_HEADERS`] from the forwarded request and then `insert` these.
///
/// Empty optional values are left out (the verifier reads an empty header as absent, too).
pub fn sign_context(
    key: &ContextKey,
    ctx: &AuthContext,
    method: &Method,
    path_and_query: &str,
    request_id: &str,
    timestamp: i64,
) -> Result<HeaderMap, SignError> {
    let mut headers = HeaderMap::with_capacity(CONTEXT_HEADERS.len() + 1);
    let rendered = RenderedContext::new(ctx)?;
    sign_rendered_into(key, &rendered, method, path_and_query, request_id, timestamp, &mut headers)?;
    Ok(headers)
}

/// [`sign_context`] writing the headers straight into `headers` (a request's own map, on the
/// gateway's path), for a context shared through an `Arc` (the contract cache's): its header
/// values are rendered once and reused while this thread keeps seeing the same `Arc` (a small
/// per-thread table keyed by the allocation, checked through a `Weak`, so a freed context can
/// never be mistaken for a new one at the same address). The signed text is fed to the MAC
/// piece by piece, the timestamp and signature rendered on the stack, and a request id already
/// on the request as signed is not added again. On an error nothing has been written.
pub fn sign_shared_context_into(
    key: &ContextKey,
    ctx: &Arc<AuthContext>,
    method: &Method,
    path_and_query: &str,
    request_id: &str,
    timestamp: i64,
    headers: &mut HeaderMap,
) -> Result<(), SignError> {
    let rendered = RenderedContext::shared(ctx)?;
    sign_rendered_into(key, &rendered, method, path_and_query, request_id, timestamp, headers)
}

/// A context's signed header values other than the request id, validated and rendered once.
struct RenderedContext {
    /// In [`SIGNED_HEADERS`] order, without `X-Request-Id`.
    values: [Option<HeaderValue>; 7],
}

/// Entries of the per-thread table of [`RenderedContext::shared`].
const RENDERED_SLOTS: usize = 64;

type RenderedSlot = Option<(std::sync::Weak<AuthContext>, Arc<RenderedContext>)>;

thread_local! {
    static RENDERED: std::cell::RefCell<[RenderedSlot; RENDERED_SLOTS]> =
        std::cell::RefCell::new(std::array::from_fn(|_| None));
}

impl RenderedContext {
    fn new(ctx: &AuthContext) -> Result<Self, SignError> {
        if ctx.kind == Kind::ApiKey && ctx.client_id.as_deref().is_none_or(str::is_empty) {
            return Err(SignError::MissingClient);
        }
        // Scopes follow the grammar (no spaces, never empty), so the verifier splits exactly
        // what was joined.
        let scopes = ctx.scopes.to_text();
        let texts: [Option<&str>; 7] = [
            Some(ctx.kind.as_str()),
            user_header(ctx)?,
            non_empty(ctx.tenant_id.as_deref()),
            non_empty(ctx.client_id.as_deref()),
            non_empty(ctx.session_id.as_deref()),
            non_empty(Some(&scopes)),
            ctx.role.map(Role::as_str),
        ];
        let mut values: [Option<HeaderValue>; 7] = Default::default();
        for ((name, text), slot) in SIGNED_HEADERS[1..].iter().zip(texts).zip(&mut values) {
            if let Some(text) = text {
                *slot = Some(header_value(name, text)?);
            }
        }
        Ok(Self { values })
    }

    fn shared(ctx: &Arc<AuthContext>) -> Result<Arc<Self>, SignError> {
        let address = Arc::as_ptr(ctx) as usize;
        // Allocations are at least 8-byte aligned: the low bits say nothing.
        let slot = (address >> 4) % RENDERED_SLOTS;
        let found = RENDERED.with_borrow(|table| match &table[slot] {
            Some((seen, rendered)) if std::ptr::eq(seen.as_ptr(), Arc::as_ptr(ctx)) && seen.strong_count() > 0 => {
                Some(rendered.clone())
            }
            _ => None,
        });
        if let Some(rendered) = found {
            return Ok(rendered);
        }
        let rendered = Arc::new(Self::new(ctx)?);
        RENDERED.with_borrow_mut(|table| table[slot] = Some((Arc::downgrade(ctx), rendered.clone())));
        Ok(rendered)
    }
}

fn sign_rendered_into(
    key: &ContextKey,
    rendered: &RenderedContext,
    method: &Method,
    path_and_query: &str,
    request_id: &str,
    timestamp: i64,
    headers: &mut HeaderMap,
) -> Result<(), SignError> {
    let request_id_value = match non_empty(Some(request_id)) {
        // Already on the request as it will be signed (the gateway's case): nothing to add.
        Some(id) if only_value(headers, &X_REQUEST_ID).is_some_and(|v| v.as_bytes() == id.as_bytes()) => None,
        Some(id) => Some(header_value(&X_REQUEST_ID, id)?),
        None => None,
    };
    let mut digits = itoa::Buffer::new();
    let timestamp = digits.format(timestamp);
    let mut mac = key.mac();
    let context_values = rendered.values.iter().map(|value| value.as_ref().map_or(&b""[..], HeaderValue::as_bytes));
    feed_signing_input(
        &mut mac,
        timestamp,
        method.as_str(),
        path_and_query,
        std::iter::once(request_id.as_bytes()).chain(context_values),
    );
    let mut signature = [0u8; SIGNATURE_PREFIX.len() + 64];
    signature[..SIGNATURE_PREFIX.len()].copy_from_slice(SIGNATURE_PREFIX.as_bytes());
    hex::encode_to_slice(mac.finalize().into_bytes(), &mut signature[SIGNATURE_PREFIX.len()..])
        .map_err(|_| SignError::InvalidValue { header: X_CONTEXT_SIGNATURE })?;
    let timestamp = header_value(&X_CONTEXT_TIMESTAMP, timestamp)?;
    let signature =
        HeaderValue::from_bytes(&signature).map_err(|_| SignError::InvalidValue { header: X_CONTEXT_SIGNATURE })?;

    if let Some(id) = request_id_value {
        headers.insert(X_REQUEST_ID, id);
    }
    for (name, value) in SIGNED_HEADERS[1..].iter().zip(&rendered.values) {
        if let Some(value) = value {
            headers.insert(name.clone(), value.clone());
        }
    }
    headers.insert(X_CONTEXT_TIMESTAMP, timestamp);
    headers.insert(X_CONTEXT_SIGNATURE, signature);
    Ok(())
}

/// The value of `name` when it has exactly one.
fn only_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    values.next().filter(|_| values.next().is_none())
}

fn header_value(name: &HeaderName, value: &str) -> Result<HeaderValue, SignError> {
    // HTTP parsers trim leading and trailing spaces and tabs, so the receiver would verify a
    // different value than was signed; refuse it here where the cause is clear.
    if value.trim_matches([' ', '\t']) != value {
        return Err(SignError::InvalidValue { header: name.clone() });
    }
    HeaderValue::from_str(value).map_err(|_| SignError::InvalidValue { header: name.clone() })
}

/// The single value of `name`, if any. Two values are refused: the signer emits one, so a
/// second one can only have been added on the way, and code reading "the" header could pick
/// either.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ContextError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ContextError::Duplicated { header: name.clone() });
    }
    // `HeaderValue::to_str` accepts only visible ASCII; SDK external ids may be any UTF-8.
    let text = std::str::from_utf8(first.as_bytes()).map_err(|_| ContextError::NotUtf8 { header: name.clone() })?;
    Ok((!text.is_empty()).then_some(text))
}

/// Parses `v1=<64 lowercase hex>` into the 32 MAC bytes.
fn parse_signature(text: &str) -> Result<[u8; 32], ContextError> {
    let hex_digits = text.strip_prefix(SIGNATURE_PREFIX).ok_or(ContextError::MalformedSignature)?;
    // Only the exact form the signer writes is accepted, so one MAC has one spelling.
    if hex_digits.len() != 64 || !hex_digits.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ContextError::MalformedSignature);
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut bytes).map_err(|_| ContextError::MalformedSignature)?;
    Ok(bytes)
}

/// Parses unix seconds written exactly as [`sign_context`] writes them (no sign, no padding).
fn parse_timestamp(text: &str) -> Result<i64, ContextError> {
    let timestamp: i64 = text.parse().map_err(|_| ContextError::MalformedTimestamp)?;
    if timestamp.to_string() != text {
        return Err(ContextError::MalformedTimestamp);
    }
    Ok(timestamp)
}

/// Verifies the context headers of a request received as `method path_and_query` at `now`
/// (unix seconds). The signature is checked before anything it covers is interpreted, so
/// [`ContextError::Expired`] means a genuine but stale context.
pub fn verify_context(
    key: &ContextKey,
    headers: &HeaderMap,
    method: &Method,
    path_and_query: &str,
    now: i64,
) -> Result<VerifiedHeaders, ContextError> {
    // Refuse duplicates of every header we read (signature and timestamp included) before
    // anything else, so nothing below ever has to choose between two values.
    let mut values: [Option<&str>; 8] = [None; 8];
    for (slot, name) in values.iter_mut().zip(&SIGNED_HEADERS) {
        *slot = single(headers, name)?;
    }
    let signature = single(headers, &X_CONTEXT_SIGNATURE)?.ok_or(ContextError::MissingSignature)?;
    let timestamp_text = single(headers, &X_CONTEXT_TIMESTAMP)?.ok_or(ContextError::MissingTimestamp)?;

    let expected = parse_signature(signature)?;
    // The current secret first, then those a rotation still accepts.
    let signed_by = |keyed: &HmacSha256| {
        let mut mac = keyed.clone();
        let signed_values = values.iter().map(|value| value.unwrap_or("").as_bytes());
        feed_signing_input(&mut mac, timestamp_text, method.as_str(), path_and_query, signed_values);
        // `verify_slice` compares in constant time, so the mismatch position does not leak.
        mac.verify_slice(&expected).is_ok()
    };
    if !std::iter::once(&*key.mac).chain(key.previous.iter()).any(signed_by) {
        return Err(ContextError::SignatureMismatch);
    }

    let timestamp = parse_timestamp(timestamp_text)?;
    let age = now.saturating_sub(timestamp);
    if age > MAX_AGE_SECONDS {
        return Err(ContextError::Expired { age });
    }
    if age < -MAX_AGE_SECONDS {
        return Err(ContextError::FromFuture { ahead: age.saturating_neg() });
    }

    let [request_id, kind, user_id, tenant_id, client_id, session_id, scopes, role] = values;
    let kind_text = kind.ok_or(ContextError::MissingKind)?;
    let kind = Kind::parse(kind_text).ok_or_else(|| ContextError::UnknownKind(kind_text.to_owned()))?;
    // The signer never produces these shapes; refusing them keeps `into_auth_context` from
    // inventing an empty subject.
    match kind {
        Kind::ApiKey if user_id.is_some() => {
            return Err(ContextError::Inconsistent { kind, reason: "X-User-Id is set for an API key" });
        }
        Kind::ApiKey if client_id.is_none() => {
            return Err(ContextError::Inconsistent { kind, reason: "X-Client-Id is missing" });
        }
        Kind::User | Kind::Pat | Kind::Sdk | Kind::Service if user_id.is_none() => {
            return Err(ContextError::Inconsistent { kind, reason: "X-User-Id is missing" });
        }
        _ => {}
    }

    let owned = |v: Option<&str>| v.map(str::to_owned);
    Ok(VerifiedHeaders {
        kind,
        user_id: owned(user_id),
        tenant_id: owned(tenant_id),
        client_id: owned(client_id),
        session_id: owned(session_id),
        scopes: Scopes::from_wire(scopes.unwrap_or_default().split(' ').filter(|s| !s.is_empty())),
        role: role.and_then(Role::from_wire),
        request_id: owned(request_id),
        timestamp,
    })
}

/// Removes every client-supplied context header (not `X-Request-Id`), for the gateway, and
/// their underscore spellings (`X_User_Id`): servers and frameworks that map `_` to `-` (CGI,
/// some WSGI and nginx setups) would otherwise read a spoofed one as the real header.
pub fn strip_context_headers(headers: &mut HeaderMap) {
    // One pass over the names decides; most requests carry none of them.
    if !headers.keys().any(spells_context_header) {
        return;
    }
    let spoofed: Vec<HeaderName> = headers.keys().filter(|name| spells_context_header(name)).cloned().collect();
    for name in spoofed {
        // `remove` drops only the first value; loop until every duplicate is gone.
        while headers.remove(&name).is_some() {}
    }
}

/// A context header's name, with any of its dashes written as underscores.
fn spells_context_header(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    name.first() == Some(&b'x')
        && CONTEXT_HEADERS.iter().any(|context| {
            let context = context.as_str().as_bytes();
            context.len() == name.len() && context.iter().zip(name).all(|(&c, &n)| c == n || (c == b'-' && n == b'_'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "context-signing-secret-for-tests";
    const NOW: i64 = 1_750_000_000;
    const PATH: &str = "/v1/user/orders/42?expand=items&limit=5";

    fn key() -> ContextKey {
        ContextKey::new(SECRET)
    }

    fn scopes(items: &[&str]) -> Scopes {
        Scopes::from_wire(items.iter().copied())
    }

    fn base(kind: Kind) -> AuthContext {
        AuthContext {
            subject: String::new(),
            kind,
            user_id: None,
            tenant_id: None,
            client_id: None,
            session_id: None,
            credential_id: None,
            role: None,
            scopes: Scopes::default(),
            expires_at: None,
            rate_limit: None,
        }
    }

    fn user() -> AuthContext {
        AuthContext {
            subject: "3f1c6a52-user".into(),
            user_id: Some("3f1c6a52-user".into()),
            session_id: Some("sess-9".into()),
            role: Some(Role::Admin),
            scopes: scopes(&["orders:read", "orders:write"]),
            ..base(Kind::User)
        }
    }

    fn pat() -> AuthContext {
        AuthContext {
            subject: "u-7".into(),
            user_id: Some("u-7".into()),
            role: Some(Role::Member),
            scopes: scopes(&["orders:read"]),
            ..base(Kind::Pat)
        }
    }

    fn sdk() -> AuthContext {
        AuthContext {
            subject: "sdk:client-1:ext-émile".into(),
            tenant_id: Some("client-1".into()),
            client_id: Some("client-1".into()),
            session_id: Some("sdk-sess-1".into()),
            scopes: scopes(&["profile:read"]),
            ..base(Kind::Sdk)
        }
    }

    fn api_key() -> AuthContext {
        AuthContext {
            subject: "client:client-2".into(),
            tenant_id: Some("client-2".into()),
            client_id: Some("client-2".into()),
            scopes: scopes(&["*"]),
            ..base(Kind::ApiKey)
        }
    }

    fn service() -> AuthContext {
        AuthContext { subject: "billing".into(), scopes: scopes(&["internal:*"]), ..base(Kind::Service) }
    }

    /// Everything a context carries over the wire; the rest is documented as not recoverable.
    fn wire_part(ctx: &AuthContext) -> AuthContext {
        AuthContext { credential_id: None, expires_at: None, rate_limit: None, ..ctx.clone() }
    }

    fn sign(ctx: &AuthContext) -> HeaderMap {
        sign_context(&key(), ctx, &Method::GET, PATH, "req-1", NOW).expect("sign")
    }

    fn verify(headers: &HeaderMap) -> Result<VerifiedHeaders, ContextError> {
        verify_context(&key(), headers, &Method::GET, PATH, NOW)
    }

    #[test]
    fn round_trip_for_each_kind() {
        for mut ctx in [user(), pat(), sdk(), api_key(), service()] {
            ctx.credential_id = Some("cred-1".into());
            ctx.expires_at = Some(NOW + 900);
            let headers = sign(&ctx);
            let verified = verify(&headers).expect("verify");
            assert_eq!(verified.kind, ctx.kind);
            assert_eq!(verified.request_id.as_deref(), Some("req-1"));
            assert_eq!(verified.timestamp, NOW);
            assert_eq!(verified.clone().into_auth_context(), wire_part(&ctx), "{:?}", ctx.kind);
            assert_eq!(headers.get(X_AUTH_KIND).expect("kind"), ctx.kind.as_str());
        }
    }

    #[test]
    fn user_id_header_follows_the_kind() {
        let user_id = |ctx: &AuthContext| sign(ctx).get(X_USER_ID).map(|v| v.to_str().expect("ascii").to_owned());
        assert_eq!(user_id(&user()).as_deref(), Some("3f1c6a52-user"));
        assert_eq!(user_id(&pat()).as_deref(), Some("u-7"));
        assert_eq!(user_id(&api_key()), None);
        assert_eq!(user_id(&service()).as_deref(), Some("billing"));
        let sdk_headers = sign(&sdk());
        assert_eq!(sdk_headers.get(X_USER_ID).expect("sdk").as_bytes(), "sdk:client-1:ext-émile".as_bytes());
        let verified = verify(&sdk_headers).expect("verify");
        assert_eq!(verified.user_id.as_deref(), Some("sdk:client-1:ext-émile"));
    }

    #[test]
    fn absent_values_are_not_sent() {
        let headers = sign(&base_with_user(Kind::User));
        for name in [X_TENANT_ID, X_CLIENT_ID, X_SESSION_ID, X_SCOPES, X_ROLE] {
            assert!(headers.get(&name).is_none(), "{name}");
        }
        let verified = verify(&headers).expect("verify");
        assert!(verified.scopes.is_empty());
        assert_eq!(verified.role, None);
    }

    fn base_with_user(kind: Kind) -> AuthContext {
        AuthContext { subject: "u1".into(), user_id: Some("u1".into()), ..base(kind) }
    }

    /// The wire format, computed independently with `hmac` so a change to it fails here.
    #[test]
    fn signature_is_hmac_sha256_over_the_spec_lines() {
        // Every field distinct, so a swapped line changes the MAC.
        let full = AuthContext { tenant_id: Some("t-1".into()), client_id: Some("c-1".into()), ..user() };
        let full_text = format!(
            "v1\n{NOW}\nPOST\n{PATH}\nreq-1\nuser\n3f1c6a52-user\nt-1\nc-1\nsess-9\norders:read orders:write\nadmin"
        );
        // Absent headers as empty lines, including the last one, under a key longer than a block.
        let sparse = AuthContext { role: None, ..user() };
        let sparse_text =
            format!("v1\n{NOW}\nPOST\n{PATH}\nreq-1\nuser\n3f1c6a52-user\n\n\nsess-9\norders:read orders:write\n");
        let long_secret = "a-secret-longer-than-one-sha256-block-".repeat(3);
        for (secret, ctx, text) in [(SECRET, full, full_text), (long_secret.as_str(), sparse, sparse_text)] {
            let headers =
                sign_context(&ContextKey::new(secret), &ctx, &Method::POST, PATH, "req-1", NOW).expect("sign");
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("key");
            mac.update(text.as_bytes());
            let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
            assert_eq!(headers.get(X_CONTEXT_SIGNATURE).expect("signature"), expected.as_str());
            assert_eq!(headers.get(X_CONTEXT_TIMESTAMP).expect("timestamp"), NOW.to_string().as_str());
            assert_eq!(headers.get(X_SCOPES).expect("scopes"), "orders:read orders:write");
            assert_eq!(headers.get(X_REQUEST_ID).expect("request id"), "req-1");
            assert_eq!(headers.get(X_AUTH_KIND).expect("kind"), "user");
            assert_eq!(headers.get(X_USER_ID).expect("user"), "3f1c6a52-user");
            assert_eq!(headers.get(X_SESSION_ID).expect("session"), "sess-9");
            let text_of = |name| headers.get(name).map(|v: &HeaderValue| v.to_str().expect("ascii"));
            assert_eq!(text_of(X_TENANT_ID), ctx.tenant_id.as_deref());
            assert_eq!(text_of(X_CLIENT_ID), ctx.client_id.as_deref());
            assert_eq!(text_of(X_ROLE), ctx.role.map(Role::as_str));
        }
    }

    /// The verifier side of the pin: headers written by hand, MAC computed with `hmac` directly.
    #[test]
    fn verifier_accepts_a_hand_signed_request() {
        let text = format!("v1\n{NOW}\nPOST\n{PATH}\nreq-1\nuser\nu1\nt-1\nc-1\ns-1\na:read b:write\nadmin");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(text.as_bytes());
        let signature = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("X-Request-Id", "req-1"),
            ("X-Auth-Kind", "user"),
            ("X-User-Id", "u1"),
            ("X-Tenant-Id", "t-1"),
            ("X-Client-Id", "c-1"),
            ("X-Session-Id", "s-1"),
            ("X-Scopes", "a:read b:write"),
            ("X-Role", "admin"),
            ("X-Context-Timestamp", &NOW.to_string()),
            ("X-Context-Signature", &signature),
        ] {
            headers.insert(HeaderName::from_bytes(name.as_bytes()).expect("name"), value.parse().expect("value"));
        }
        let verified = verify_context(&key(), &headers, &Method::POST, PATH, NOW).expect("verify");
        assert_eq!(
            verified,
            VerifiedHeaders {
                kind: Kind::User,
                user_id: Some("u1".into()),
                tenant_id: Some("t-1".into()),
                client_id: Some("c-1".into()),
                session_id: Some("s-1".into()),
                scopes: scopes(&["a:read", "b:write"]),
                role: Some(Role::Admin),
                request_id: Some("req-1".into()),
                timestamp: NOW,
            }
        );
    }

    #[test]
    fn tampering_with_any_signed_header_is_rejected() {
        // An api_key context has no X-User-Id and a user one no X-Client-Id; between them every
        // signed header is present in one of the two.
        for ctx in [user(), sdk(), api_key()] {
            let signed = sign(&ctx);
            for name in SIGNED_HEADERS.iter().chain([&X_CONTEXT_TIMESTAMP]) {
                if !signed.contains_key(name) {
                    continue;
                }
                let mut headers = signed.clone();
                // Still a known kind and still a plausible timestamp, so only the MAC can catch it.
                let tampered = if name == X_AUTH_KIND {
                    if ctx.kind == Kind::User { "pat" } else { "user" }.to_owned()
                } else if name == X_CONTEXT_TIMESTAMP {
                    (NOW - 1).to_string()
                } else {
                    format!("{}x", std::str::from_utf8(headers[name].as_bytes()).expect("utf-8"))
                };
                headers.insert(name.clone(), HeaderValue::from_str(&tampered).expect("value"));
                assert_eq!(verify(&headers), Err(ContextError::SignatureMismatch), "{name} of {:?}", ctx.kind);
            }
        }
    }

    #[test]
    fn removing_a_signed_header_is_rejected() {
        let signed = sign(&user());
        for name in [X_REQUEST_ID, X_SESSION_ID, X_SCOPES, X_ROLE, X_USER_ID, X_AUTH_KIND] {
            let mut headers = signed.clone();
            headers.remove(&name);
            assert_eq!(verify(&headers), Err(ContextError::SignatureMismatch), "{name}");
        }
    }

    #[test]
    fn adding_a_header_that_was_absent_is_rejected() {
        let signed = sign(&user());
        for name in [X_TENANT_ID, X_CLIENT_ID] {
            let mut headers = signed.clone();
            headers.insert(name.clone(), HeaderValue::from_static("someone-else"));
            assert_eq!(verify(&headers), Err(ContextError::SignatureMismatch), "{name}");
        }
        let mut headers = sign(&api_key());
        headers.insert(X_USER_ID, HeaderValue::from_static("u1"));
        assert_eq!(verify(&headers), Err(ContextError::SignatureMismatch));
    }

    #[test]
    fn method_path_and_query_are_signed() {
        let headers = sign(&user());
        let at = |method: &Method, path: &str| verify_context(&key(), &headers, method, path, NOW);
        assert!(at(&Method::GET, PATH).is_ok());
        assert_eq!(at(&Method::POST, PATH), Err(ContextError::SignatureMismatch));
        assert_eq!(at(&Method::GET, "/v1/user/orders/43?expand=items&limit=5"), Err(ContextError::SignatureMismatch));
        assert_eq!(at(&Method::GET, "/v1/user/orders/42?expand=items&limit=500"), Err(ContextError::SignatureMismatch));
        assert_eq!(at(&Method::GET, "/v1/user/orders/42"), Err(ContextError::SignatureMismatch));
    }

    #[test]
    fn duplicated_headers_are_rejected() {
        let signed = sign(&user());
        let mut names = SIGNED_HEADERS.to_vec();
        names.extend([X_CONTEXT_TIMESTAMP, X_CONTEXT_SIGNATURE, X_TENANT_ID]);
        for name in names {
            let mut headers = signed.clone();
            let value = headers.get(&name).cloned().unwrap_or(HeaderValue::from_static("t1"));
            headers.append(name.clone(), value.clone());
            headers.append(name.clone(), value);
            assert_eq!(verify(&headers), Err(ContextError::Duplicated { header: name.clone() }), "{name}");
        }
        // The smuggling case: the signed value first, an attacker's second.
        let mut headers = signed.clone();
        headers.append(X_ROLE, HeaderValue::from_static("owner"));
        assert_eq!(verify(&headers), Err(ContextError::Duplicated { header: X_ROLE }));
    }

    #[test]
    fn timestamps_outside_the_window_are_rejected() {
        let headers = sign(&user());
        let at = |now: i64| verify_context(&key(), &headers, &Method::GET, PATH, now);
        assert!(at(NOW + 59).is_ok());
        assert!(at(NOW + 60).is_ok());
        assert!(at(NOW - 59).is_ok());
        assert!(at(NOW - 60).is_ok());
        assert_eq!(at(NOW + 61), Err(ContextError::Expired { age: 61 }));
        assert_eq!(at(NOW - 61), Err(ContextError::FromFuture { ahead: 61 }));
        assert_eq!(at(NOW + 61).map_err(|e| e.code()), Err(ErrorCode::TokenExpired));
        assert_eq!(at(NOW - 61).map_err(|e| e.code()), Err(ErrorCode::TokenInvalid));
        assert_eq!(at(i64::MAX).map_err(|e| e.code()), Err(ErrorCode::TokenExpired));
        assert_eq!(at(i64::MIN).map_err(|e| e.code()), Err(ErrorCode::TokenInvalid));
    }

    #[test]
    fn wrong_key_is_rejected() {
        let headers = sign(&user());
        let other = ContextKey::new("another-secret");
        assert_eq!(verify_context(&other, &headers, &Method::GET, PATH, NOW), Err(ContextError::SignatureMismatch));
    }

    #[test]
    fn a_rotation_verifies_with_previous_secrets_and_signs_with_the_current_one() {
        let by_old = sign(&user());
        let rotated = ContextKey::with_previous("the-new-secret", [SECRET]);
        assert!(verify_context(&rotated, &by_old, &Method::GET, PATH, NOW).is_ok(), "the old secret is still accepted");
        let by_new = sign_context(&rotated, &user(), &Method::GET, PATH, "req-1", NOW).expect("sign");
        assert!(verify_context(&ContextKey::new("the-new-secret"), &by_new, &Method::GET, PATH, NOW).is_ok());
        assert_eq!(
            verify_context(&key(), &by_new, &Method::GET, PATH, NOW),
            Err(ContextError::SignatureMismatch),
            "signed with the current secret, not a previous one"
        );
        let staged = ContextKey::with_previous(SECRET, ["the-new-secret"]);
        assert!(verify_context(&staged, &by_new, &Method::GET, PATH, NOW).is_ok(), "a staged secret is accepted");
        let unrelated = ContextKey::with_previous("x", ["y"]);
        assert_eq!(verify_context(&unrelated, &by_old, &Method::GET, PATH, NOW), Err(ContextError::SignatureMismatch));
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        let signed = sign(&user());
        let mut headers = signed.clone();
        headers.remove(X_CONTEXT_SIGNATURE);
        assert_eq!(verify(&headers), Err(ContextError::MissingSignature));

        let mut headers = signed.clone();
        headers.remove(X_CONTEXT_TIMESTAMP);
        assert_eq!(verify(&headers), Err(ContextError::MissingTimestamp));

        let good = signed[&X_CONTEXT_SIGNATURE].to_str().expect("ascii").to_owned();
        for bad in [
            good.trim_start_matches("v1=").to_owned(),
            good.replace("v1=", "v2="),
            good.to_uppercase().replace("V1=", "v1="),
            format!("{good}00"),
            good[..good.len() - 2].to_owned(),
            format!("{}zz", &good[..good.len() - 2]),
            "v1=".to_owned(),
        ] {
            let mut headers = signed.clone();
            headers.insert(X_CONTEXT_SIGNATURE, HeaderValue::from_str(&bad).expect("value"));
            assert_eq!(verify(&headers), Err(ContextError::MalformedSignature), "{bad}");
        }

        let mut headers = signed.clone();
        headers.insert(X_ROLE, HeaderValue::from_bytes(b"adm\xffin").expect("value"));
        assert_eq!(verify(&headers), Err(ContextError::NotUtf8 { header: X_ROLE }));
    }

    /// A correctly signed but odd header set, as a buggy or compromised signer could produce.
    fn signed_raw(values: &[(HeaderName, &str)], timestamp: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut lines: [Option<&str>; 8] = [None; 8];
        for (name, value) in values {
            let i = SIGNED_HEADERS.iter().position(|n| n == name).expect("signed header");
            lines[i] = Some(value);
            headers.insert(name.clone(), HeaderValue::from_str(value).expect("value"));
        }
        let mut mac = key().mac();
        mac.update(signing_input(timestamp, "GET", PATH, &lines).as_bytes());
        let signature = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        headers.insert(X_CONTEXT_TIMESTAMP, HeaderValue::from_str(timestamp).expect("value"));
        headers.insert(X_CONTEXT_SIGNATURE, HeaderValue::from_str(&signature).expect("value"));
        headers
    }

    #[test]
    fn signed_but_meaningless_contexts_are_rejected() {
        let ts = NOW.to_string();
        let headers = signed_raw(&[(X_AUTH_KIND, "admin"), (X_USER_ID, "u1")], &ts);
        assert_eq!(verify(&headers), Err(ContextError::UnknownKind("admin".into())));
        let headers = signed_raw(&[(X_USER_ID, "u1")], &ts);
        assert_eq!(verify(&headers), Err(ContextError::MissingKind));
        let headers = signed_raw(&[(X_AUTH_KIND, "user")], &ts);
        assert!(matches!(verify(&headers), Err(ContextError::Inconsistent { kind: Kind::User, .. })));
        let headers = signed_raw(&[(X_AUTH_KIND, "api_key"), (X_USER_ID, "u1"), (X_CLIENT_ID, "c1")], &ts);
        assert!(matches!(verify(&headers), Err(ContextError::Inconsistent { kind: Kind::ApiKey, .. })));
        let headers = signed_raw(&[(X_AUTH_KIND, "api_key")], &ts);
        assert!(matches!(verify(&headers), Err(ContextError::Inconsistent { kind: Kind::ApiKey, .. })));
        for odd in [format!("+{NOW}"), format!("0{NOW}"), "soon".to_owned()] {
            let headers = signed_raw(&[(X_AUTH_KIND, "user"), (X_USER_ID, "u1")], &odd);
            assert_eq!(verify(&headers), Err(ContextError::MalformedTimestamp), "{odd}");
        }
    }

    #[test]
    fn an_empty_header_reads_as_absent() {
        let mut headers = sign(&user());
        headers.insert(X_TENANT_ID, HeaderValue::from_static(""));
        assert_eq!(verify(&headers).expect("verify").tenant_id, None);
    }

    #[test]
    fn signing_into_a_request_map_writes_what_sign_context_returns_and_nothing_on_error() {
        let signed = sign(&sdk());
        let mut request = HeaderMap::new();
        request.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        sign_shared_context_into(&key(), &Arc::new(sdk()), &Method::GET, PATH, "req-1", NOW, &mut request)
            .expect("signed");
        assert_eq!(request.remove(http::header::ACCEPT).expect("kept"), "*/*");
        assert_eq!(request, signed);
        let mut untouched = HeaderMap::new();
        assert_eq!(
            sign_shared_context_into(
                &key(),
                &Arc::new(base(Kind::ApiKey)),
                &Method::GET,
                PATH,
                "req-1",
                NOW,
                &mut untouched
            ),
            Err(SignError::MissingClient)
        );
        assert!(untouched.is_empty());
    }

    /// The per-thread table of rendered contexts never answers for another context: not for
    /// a second `Arc`, not after the first is dropped, and not across a request id change.
    #[test]
    fn shared_contexts_sign_as_unshared_ones_however_often_and_whichever_arc() {
        let signed = |ctx: &AuthContext, id: &str| sign_context(&key(), ctx, &Method::GET, PATH, id, NOW).unwrap();
        let shared = |ctx: &Arc<AuthContext>, id: &str, start: HeaderMap| {
            let mut headers = start;
            sign_shared_context_into(&key(), ctx, &Method::GET, PATH, id, NOW, &mut headers).unwrap();
            headers
        };
        let sdk = Arc::new(sdk());
        for _ in 0..3 {
            assert_eq!(shared(&sdk, "req-1", HeaderMap::new()), signed(&sdk, "req-1"));
        }
        let mut other = base(Kind::User);
        other.user_id = Some("someone-else".into());
        let other = Arc::new(other);
        assert_eq!(shared(&other, "req-2", HeaderMap::new()), signed(&other, "req-2"));
        drop(sdk);
        for round in 0..100 {
            let mut next = base(Kind::User);
            next.user_id = Some(format!("user-{round}"));
            let next = Arc::new(next);
            assert_eq!(shared(&next, "req-3", HeaderMap::new()), signed(&next, "req-3"), "round {round}");
        }
        // The request's own id is kept when it is the signed one, replaced otherwise.
        let mut with_id = HeaderMap::new();
        with_id.insert(X_REQUEST_ID, HeaderValue::from_static("req-4"));
        assert_eq!(shared(&other, "req-4", with_id), signed(&other, "req-4"));
        let mut twice = HeaderMap::new();
        twice.append(X_REQUEST_ID, HeaderValue::from_static("req-5"));
        twice.append(X_REQUEST_ID, HeaderValue::from_static("req-5"));
        assert_eq!(shared(&other, "req-5", twice), signed(&other, "req-5"));
        let mut stale = HeaderMap::new();
        stale.insert(X_REQUEST_ID, HeaderValue::from_static("client-chosen"));
        assert_eq!(shared(&other, "req-6", stale), signed(&other, "req-6"));
    }

    #[test]
    fn unrepresentable_contexts_are_not_signed() {
        let sign_one = |ctx: &AuthContext| sign_context(&key(), ctx, &Method::GET, PATH, "req-1", NOW);
        assert_eq!(sign_one(&base(Kind::Service)), Err(SignError::MissingSubject { kind: Kind::Service }));
        assert_eq!(sign_one(&base(Kind::ApiKey)), Err(SignError::MissingClient));
    }

    #[test]
    fn strip_removes_every_context_header_but_the_request_id() {
        let mut headers = sign(&sdk());
        headers.append(X_USER_ID, HeaderValue::from_static("spoofed"));
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.insert(HeaderName::from_static("x_user_id"), HeaderValue::from_static("spoofed"));
        headers.insert(HeaderName::from_static("x_auth_kind"), HeaderValue::from_static("service"));
        headers.insert(HeaderName::from_static("x-tenant_id"), HeaderValue::from_static("spoofed"));
        headers.insert(HeaderName::from_static("x_kept"), HeaderValue::from_static("1"));
        strip_context_headers(&mut headers);
        assert!(!headers.contains_key("x_user_id") && !headers.contains_key("x_auth_kind"));
        assert!(!headers.contains_key("x-tenant_id"));
        assert_eq!(headers.remove("x_kept").expect("kept"), "1");
        assert!(CONTEXT_HEADERS.iter().all(|name| !headers.contains_key(name)));
        assert_eq!(headers.get(X_REQUEST_ID).expect("request id"), "req-1");
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let shown = format!("{:?}", key());
        assert!(!shown.contains(SECRET));
        assert_eq!(shown, "ContextKey(<redacted>)");
    }
}
