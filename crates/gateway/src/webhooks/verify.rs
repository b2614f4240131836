//! Signature verification for one webhook source: Standard Webhooks, Meta and the generic
//! profile, HMAC-SHA256 with every configured secret tried, compared in constant time; and the
//! token profile, a static secret in a header compared (as a SHA-256 digest) with every secret.

use base64::{
    Engine as _,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    config::routes::{EventIdSource, GenericSignature, SignatureEncoding, TokenAuth, Webhook, WebhookProfile},
    error::GatewayError,
};

type HmacSha256 = Hmac<Sha256>;

/// Standard base64 that accepts a value with or without its `=` padding: senders differ, and
/// padding carries no information.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The prefix of a Standard Webhooks secret whose remainder is base64.
pub const WHSEC_PREFIX: &str = "whsec_";

pub const STANDARD_ID: HeaderName = HeaderName::from_static("webhook-id");
pub const STANDARD_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub const STANDARD_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
pub const META_SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");

/// Longest `webhook-id` accepted: it becomes part of a Redis key.
const MAX_ID_LEN: usize = 256;
/// More signatures than this in one `webhook-signature` header is not rotation but abuse.
const MAX_SIGNATURES: usize = 16;

/// What a verified delivery tells the rest of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's own event id (Standard Webhooks), if the profile has one.
    pub event_id: Option<String>,
    /// What identifies this delivery for the replay guard, unique within the source.
    pub replay_key: String,
    /// The signature-related request headers worth passing on to the upstream, so it can
    /// verify again if it wants to.
    pub forward_headers: Vec<(String, String)>,
}

/// The verifier of one source, with its secrets decoded once at start-up.
pub struct Verifier {
    profile: Profile,
    keys: Vec<SecretSlice<u8>>,
    tolerance_secs: i64,
}

enum Profile {
    Meta { verify_token: SecretString },
    Standard,
    Generic(GenericSignature),
    Token(TokenAuth),
}

/// Decodes one configured secret into HMAC key bytes. For the Standard profile a `whsec_`
/// secret is base64 after the prefix (the Standard Webhooks spec); any other secret is used
/// as its UTF-8 bytes, which is what Meta and most generic senders do.
pub fn decode_secret(profile: &WebhookProfile, secret: &str) -> Result<Vec<u8>, String> {
    match (profile, secret.strip_prefix(WHSEC_PREFIX)) {
        (WebhookProfile::Standard, Some(encoded)) => {
            let key = BASE64.decode(encoded.trim()).map_err(|e| format!("a `whsec_` secret is not base64: {e}"))?;
            if key.is_empty() {
                return Err("a `whsec_` secret decodes to an empty key".to_owned());
            }
            Ok(key)
        }
        _ => Ok(secret.as_bytes().to_vec()),
    }
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::SignatureInvalid(message.into())
}

/// An authenticated delivery whose configured event id is missing or unusable (400).
fn bad_id(message: String) -> GatewayError {
    GatewayError::BadRequest(message)
}

/// The replay key of a delivery without an event id: the SHA-256 of its (inflated) body.
fn body_key(body: &[u8]) -> String {
    format!("body:{}", hex::encode(Sha256::digest(body)))
}

/// The event id at `pointer` in a JSON body: a string, or a number written as JSON writes it.
fn pointer_id(body: &[u8], pointer: &str) -> Result<String, GatewayError> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| bad_id("the body is not JSON, so it has no event id".to_owned()))?;
    match json.pointer(pointer) {
        Some(serde_json::Value::String(id)) => Ok(id.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(bad_id(format!("the event id at `{pointer}` is not a string or a number"))),
        None => Err(bad_id(format!("the body has no event id at `{pointer}`"))),
    }
}

/// The value of a header that must appear once, as text.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, GatewayError> {
    let mut values = headers.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(invalid(format!("expected exactly one `{name}` header")));
    };
    value.to_str().map(str::trim).map_err(|_| invalid(format!("the `{name}` header is not text")))
}

/// Whether `candidate` equals any of `expected`, in time that does not depend on where the
/// bytes first differ. Lengths are public (every tag is 32 bytes), so a length mismatch may
/// return early; every expected tag is still compared so the matching secret's position does
/// not show in the timing.
pub fn matches_any(expected: &[[u8; 32]], candidate: &[u8]) -> Option<usize> {
    let mut found = None;
    for (i, tag) in expected.iter().enumerate() {
        if bool::from(tag.as_slice().ct_eq(candidate)) && found.is_none() {
            found = Some(i);
        }
    }
    found
}

/// Constant-time equality of two secrets of any length: hashing first hides the length.
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(Sha256::digest(a).ct_eq(&Sha256::digest(b)))
}

impl Verifier {
    pub fn new(hook: &Webhook) -> Result<Self, String> {
        let keys = hook
            .secrets
            .iter()
            .enumerate()
            .map(|(i, secret)| {
                decode_secret(&hook.profile, secret.expose_secret())
                    .map(SecretSlice::from)
                    .map_err(|e| format!("webhooks.{}.secrets[{i}]: {e}", hook.source))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let profile = match &hook.profile {
            WebhookProfile::Meta { verify_token } => Profile::Meta { verify_token: verify_token.clone() },
            WebhookProfile::Standard => Profile::Standard,
            WebhookProfile::Generic(generic) => Profile::Generic(generic.clone()),
            WebhookProfile::Token(token) => Profile::Token(token.clone()),
        };
        let tolerance_secs = i64::try_from(hook.tolerance.as_secs()).unwrap_or(i64::MAX).max(1);
        Ok(Self { profile, keys, tolerance_secs })
    }

    /// The verify token of the Meta GET handshake, compared in constant time; `false` for
    /// every other profile.
    pub fn handshake_token_matches(&self, token: &str) -> bool {
        match &self.profile {
            Profile::Meta { verify_token } => secret_eq(verify_token.expose_secret().as_bytes(), token.as_bytes()),
            _ => false,
        }
    }

    pub fn is_meta(&self) -> bool {
        matches!(self.profile, Profile::Meta { .. })
    }

    /// The HMAC-SHA256 tag of `parts` under every configured key.
    fn tags(&self, parts: &[&[u8]]) -> Vec<[u8; 32]> {
        self.keys
            .iter()
            .filter_map(|key| {
                // HMAC accepts keys of any length, so this never fails; a key that somehow
                // did would simply match nothing.
                let mut mac = HmacSha256::new_from_slice(key.expose_secret()).ok()?;
                for part in parts {
                    mac.update(part);
                }
                Some(mac.finalize().into_bytes().into())
            })
            .collect()
    }

    /// Refuses a timestamp (unix seconds) further than the tolerance from `now`, either way:
    /// a future one would otherwise stay valid for longer than the replay window.
    fn check_timestamp(&self, name: &HeaderName, text: &str, now: i64) -> Result<(), GatewayError> {
        let ts: i64 =
            text.parse().map_err(|_| invalid(format!("the `{name}` header is not a unix timestamp in seconds")))?;
        if now.abs_diff(ts) > self.tolerance_secs.unsigned_abs() {
            return Err(invalid(format!("the `{name}` timestamp is outside the {}s tolerance", self.tolerance_secs)));
        }
        Ok(())
    }

    /// Checks one delivery: `now` is the gateway's unix time in seconds.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<Verified, GatewayError> {
        match &self.profile {
            Profile::Standard => self.verify_standard(headers, body, now),
            Profile::Meta { .. } => {
                let value = single(headers, &META_SIGNATURE)?;
                let hex_sig = value
                    .strip_prefix("sha256=")
                    .ok_or_else(|| invalid("`x-hub-signature-256` must be `sha256=<hex>`"))?;
                let signature =
                    hex::decode(hex_sig).map_err(|_| invalid("`x-hub-signature-256` does not carry hex"))?;
                self.by_signature(&signature, &[body], vec![(META_SIGNATURE.to_string(), value.to_owned())])
            }
            Profile::Generic(generic) => {
                let mut forward = Vec::new();
                if let Some(name) = &generic.timestamp_header {
                    let ts = single(headers, name)?;
                    self.check_timestamp(name, ts, now)?;
                    forward.push((name.to_string(), ts.to_owned()));
                }
                let value = single(headers, &generic.header)?;
                let encoded = value
                    .strip_prefix(generic.prefix.as_str())
                    .ok_or_else(|| invalid(format!("`{}` must start with `{}`", generic.header, generic.prefix)))?;
                let signature = match generic.encoding {
                    SignatureEncoding::Hex => hex::decode(encoded).ok(),
                    SignatureEncoding::Base64 => BASE64.decode(encoded).ok(),
                }
                .ok_or_else(|| invalid(format!("`{}` does not carry a valid signature encoding", generic.header)))?;
                forward.push((generic.header.to_string(), value.to_owned()));
                self.by_signature(&signature, &[body], forward)
            }
            Profile::Token(token) => self.verify_token(token, headers, body),
        }
    }

    /// The token profile: the header's value must equal one of the secrets. Digests are
    /// compared, so neither the position of the first differing byte nor the secrets' lengths
    /// show in the timing, and every secret is compared, so neither does which one matched.
    /// The token itself is never forwarded: it is the secret, not a proof of this event.
    fn verify_token(&self, token: &TokenAuth, headers: &HeaderMap, body: &[u8]) -> Result<Verified, GatewayError> {
        let presented: [u8; 32] = Sha256::digest(single(headers, &token.header)?.as_bytes()).into();
        let digests: Vec<[u8; 32]> = self.keys.iter().map(|key| Sha256::digest(key.expose_secret()).into()).collect();
        if matches_any(&digests, &presented).is_none() {
            return Err(invalid(format!("the `{}` token does not match", token.header)));
        }
        // Only an authenticated sender learns whether its event id is usable.
        let id = match &token.event_id {
            None => return Ok(Verified { event_id: None, replay_key: body_key(body), forward_headers: Vec::new() }),
            Some(EventIdSource::Header(name)) => {
                single(headers, name).map_err(|_| bad_id(format!("expected exactly one `{name}` header")))?.to_owned()
            }
            Some(EventIdSource::Pointer(pointer)) => pointer_id(body, pointer)?,
        };
        if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad_id(format!("the event id must be 1 to {MAX_ID_LEN} visible ASCII characters")));
        }
        let forward_headers = match &token.event_id {
            Some(EventIdSource::Header(name)) => vec![(name.to_string(), id.clone())],
            _ => Vec::new(),
        };
        Ok(Verified { replay_key: format!("id:{id}"), event_id: Some(id), forward_headers })
    }

    /// Profiles without an event id: the replay key is the tag that matched, so the same
    /// signature written in upper- or lower-case hex is still one delivery.
    fn by_signature(
        &self,
        signature: &[u8],
        parts: &[&[u8]],
        forward_headers: Vec<(String, String)>,
    ) -> Result<Verified, GatewayError> {
        let tags = self.tags(parts);
        let index = matches_any(&tags, signature).ok_or_else(|| invalid("the signature does not match"))?;
        let tag = tags.get(index).ok_or_else(|| invalid("the signature does not match"))?;
        Ok(Verified { event_id: None, replay_key: format!("sig:{}", hex::encode(tag)), forward_headers })
    }

    fn verify_standard(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<Verified, GatewayError> {
        let id = single(headers, &STANDARD_ID)?;
        if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(format!("`webhook-id` must be 1 to {MAX_ID_LEN} visible ASCII characters")));
        }
        let timestamp = single(headers, &STANDARD_TIMESTAMP)?;
        self.check_timestamp(&STANDARD_TIMESTAMP, timestamp, now)?;
        let header = single(headers, &STANDARD_SIGNATURE)?;

        // Several signatures may be sent while the sender rotates its secret; only `v1`
        // (symmetric HMAC-SHA256) is ours, other versions such as `v1a` are skipped.
        let mut candidates = Vec::new();
        for item in header.split_whitespace().take(MAX_SIGNATURES) {
            let (version, encoded) =
                item.split_once(',').ok_or_else(|| invalid("`webhook-signature` entries must be `v1,<base64>`"))?;
            if version == "v1" {
                let signature =
                    BASE64.decode(encoded).map_err(|_| invalid("a `webhook-signature` entry is not base64"))?;
                candidates.push(signature);
            }
        }
        if candidates.is_empty() {
            return Err(invalid("`webhook-signature` has no `v1` signature"));
        }
        let tags = self.tags(&[id.as_bytes(), b".", timestamp.as_bytes(), b".", body]);
        // Every candidate is compared, matched or not, so timing says nothing about which one.
        let matched = candidates.iter().fold(false, |found, sig| matches_any(&tags, sig).is_some() | found);
        if !matched {
            return Err(invalid("the signature does not match"));
        }
        Ok(Verified {
            event_id: Some(id.to_owned()),
            replay_key: format!("id:{id}"),
            forward_headers: vec![
                (STANDARD_TIMESTAMP.to_string(), timestamp.to_owned()),
                (STANDARD_SIGNATURE.to_string(), header.to_owned()),
            ],
        })
    }
}
