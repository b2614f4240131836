//! JWT access tokens, signed and verified only here. A key ring holds the current secret and
//! `JWT_PREVIOUS_SECRETS`; each key is named by a `kid` derived from the secret, so every
//! replica names a key the same way. Every check of SPEC §3 is made explicitly: the
//! jsonwebtoken crate's defaults check only `exp`, and its clock is not ours.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Invalid};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Allowed clock skew for `exp` and `nbf`.
pub const LEEWAY_SECONDS: i64 = 30;
const ALGORITHM: Algorithm = Algorithm::HS256;

/// What a token is for; a token of one type is never accepted as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Access,
    Sdk,
}

impl TokenType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Sdk => "sdk",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Access, Self::Sdk].into_iter().find(|typ| typ.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub jti: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub typ: String,
    pub role: String,
    pub scopes: Vec<String>,
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The signing keys: the first signs, all verify.
pub struct KeyRing {
    keys: Vec<Key>,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("KeyRing").field("kids", &kids).finish_non_exhaustive()
    }
}

/// `kid` of a secret: the first 16 hex characters of its SHA-256.
pub fn kid_for(secret: &str) -> String {
    let mut hex = super::credential::sha256_hex(secret);
    hex.truncate(16);
    hex
}

/// The inputs of a token to sign.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub typ: TokenType,
    pub subject: &'a str,
    pub tenant: Option<&'a str>,
    pub session: Option<&'a str>,
    pub jti: &'a str,
    pub role: &'a str,
    pub scopes: &'a [String],
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl KeyRing {
    pub fn new(current: &SecretString, previous: &[SecretString], issuer: &str, audience: &str) -> Self {
        let keys = std::iter::once(current)
            .chain(previous)
            .map(|secret| {
                let bytes = secret.expose_secret().as_bytes();
                Key {
                    kid: kid_for(secret.expose_secret()),
                    encoding: EncodingKey::from_secret(bytes),
                    decoding: DecodingKey::from_secret(bytes),
                }
            })
            .collect();
        let mut validation = Validation::new(ALGORITHM);
        validation.algorithms = vec![ALGORITHM];
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.validate_aud = true;
        // Time is checked below against the injected clock, with our leeway.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.required_spec_claims =
            ["exp", "nbf", "iss", "aud", "sub"].into_iter().map(String::from).collect::<HashSet<_>>();
        Self { keys, validation, issuer: issuer.to_owned(), audience: audience.to_owned() }
    }

    pub fn current_kid(&self) -> &str {
        self.keys.first().map_or("", |k| k.kid.as_str())
    }

    /// Signs a token; returns it with the claims it carries, so the issuer can describe
    /// what it issued without verifying its own token.
    pub fn sign(&self, token: &NewToken<'_>) -> Result<(String, Claims), Error> {
        let key = self.keys.first().ok_or_else(|| Error::internal("empty key ring"))?;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: token.subject.to_owned(),
            tid: token.tenant.map(str::to_owned),
            sid: token.session.map(str::to_owned),
            jti: token.jti.to_owned(),
            iat: token.issued_at.unix_timestamp(),
            nbf: token.issued_at.unix_timestamp(),
            exp: token.expires_at.unix_timestamp(),
            typ: token.typ.as_str().to_owned(),
            role: token.role.to_owned(),
            scopes: token.scopes.to_vec(),
        };
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".to_owned());
        let signed = jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(Error::internal)?;
        Ok((signed, claims))
    }

    /// Verifies a token of the expected type at `now`. Revocation and session state are the
    /// caller's next step.
    pub fn verify(&self, token: &str, expected: TokenType, now: OffsetDateTime) -> Result<Claims, Error> {
        let (typ, claims) = self.decode(token)?;
        if typ != expected {
            return Err(Error::TokenInvalid(Invalid::WrongType));
        }
        check_time(&claims, now)?;
        Ok(claims)
    }

    /// Verifies a token of either type at `now`, decoding it once, for callers that accept
    /// both and dispatch on its `typ`.
    pub fn verify_any(&self, token: &str, now: OffsetDateTime) -> Result<(TokenType, Claims), Error> {
        let (typ, claims) = self.decode(token)?;
        check_time(&claims, now)?;
        Ok((typ, claims))
    }

    /// Size, header, key, signature, issuer and audience, and a known `typ`; not time.
    fn decode(&self, token: &str) -> Result<(TokenType, Claims), Error> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::TokenInvalid(Invalid::TooLarge));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::TokenInvalid(Invalid::Malformed))?;
        if names_critical_extensions(token) {
            return Err(Error::TokenInvalid(Invalid::CriticalExtension));
        }
        if header.alg != ALGORITHM {
            return Err(Error::TokenInvalid(Invalid::Algorithm));
        }
        let kid = header.kid.ok_or(Error::TokenInvalid(Invalid::NoKey))?;
        let key = self.keys.iter().find(|k| k.kid == kid).ok_or(Error::TokenInvalid(Invalid::UnknownKey))?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            Error::TokenInvalid(match e.kind() {
                ErrorKind::InvalidSignature => Invalid::Signature,
                ErrorKind::InvalidIssuer => Invalid::Issuer,
                ErrorKind::InvalidAudience => Invalid::Audience,
                ErrorKind::InvalidAlgorithm => Invalid::Algorithm,
                _ => Invalid::Malformed,
            })
        })?;
        let typ = TokenType::parse(&data.claims.typ).ok_or(Error::TokenInvalid(Invalid::WrongType))?;
        Ok((typ, data.claims))
    }
}

/// `exp` and `nbf` against the injected clock, with the leeway.
fn check_time(claims: &Claims, now: OffsetDateTime) -> Result<(), Error> {
    let now = now.unix_timestamp();
    if claims.exp + LEEWAY_SECONDS <= now {
        return Err(Error::TokenExpired);
    }
    if claims.nbf - LEEWAY_SECONDS > now {
        return Err(Error::TokenInvalid(Invalid::NotYetValid));
    }
    Ok(())
}

/// Whether the JOSE header has a `crit` member: it lists extensions a verifier must understand,
/// and this service implements none, so such a token is refused (RFC 7515 §4.1.11).
fn names_critical_extensions(token: &str) -> bool {
    use base64::Engine as _;
    let Some(segment) = token.split('.').next() else { return false };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment) else { return false };
    // Cheap screen first: only a header that spells `"crit"` is parsed.
    if !bytes.windows(6).any(|w| w == b"\"crit\"") {
        return false;
    }
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
        .map_or(true, |header| header.contains_key("crit"))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests read the wall clock
mod tests {
    use super::*;
    use time::Duration;

    fn ring(secret: &str) -> KeyRing {
        KeyRing::new(&SecretString::from(secret.to_owned()), &[], "portcullis", "portcullis")
    }

    fn token(ring: &KeyRing, now: OffsetDateTime) -> String {
        let scopes = vec!["*".to_owned()];
        ring.sign(&NewToken {
            typ: TokenType::Access,
            subject: "u1",
            tenant: None,
            session: Some("s1"),
            jti: "j1",
            role: "member",
            scopes: &scopes,
            issued_at: now,
            expires_at: now + Duration::minutes(15),
        })
        .map(|(token, _)| token)
        .unwrap_or_default()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_and_type_check() {
        let r = ring(SECRET);
        let now = OffsetDateTime::now_utc();
        let t = token(&r, now);
        let claims = r.verify(&t, TokenType::Access, now);
        assert_eq!(claims.map(|c| c.sub).ok(), Some("u1".to_owned()));
        assert!(matches!(r.verify(&t, TokenType::Sdk, now), Err(Error::TokenInvalid(Invalid::WrongType))));
        // Decoded once, whatever its type: the caller dispatches on it.
        let (typ, claims) = r.verify_any(&t, now).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((typ, claims.jti.as_str()), (TokenType::Access, "j1"));
        assert!(matches!(r.verify_any(&t, now + Duration::minutes(16)), Err(Error::TokenExpired)));
        assert!(matches!(r.verify_any("x.y.z", now), Err(Error::TokenInvalid(Invalid::Malformed))));
    }

    #[test]
    fn expiry_uses_the_given_clock() {
        let r = ring(SECRET);
        let now = OffsetDateTime::now_utc();
        let t = token(&r, now);
        assert!(matches!(r.verify(&t, TokenType::Access, now + Duration::minutes(16)), Err(Error::TokenExpired)));
        assert!(matches!(r.verify(&t, TokenType::Access, now - Duration::minutes(5)), Err(Error::TokenInvalid(_))));
    }

    #[test]
    fn previous_secrets_still_verify_and_unknown_keys_do_not() {
        let old = ring(SECRET);
        let now = OffsetDateTime::now_utc();
        let t = token(&old, now);
        let rotated = KeyRing::new(
            &SecretString::from("another-secret-that-is-32-bytes-long!".to_owned()),
            &[SecretString::from(SECRET.to_owned())],
            "portcullis",
            "portcullis",
        );
        assert!(rotated.verify(&t, TokenType::Access, now).is_ok());
        let other = ring("yet-another-secret-of-32-bytes-or-more");
        assert!(matches!(other.verify(&t, TokenType::Access, now), Err(Error::TokenInvalid(_))));
        assert_eq!(kid_for(SECRET).len(), 16);
    }
}
