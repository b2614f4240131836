//! Opaque credentials (`pcr_` refresh tokens, and the other `pc?_` kinds): a prefix, 30 base62
//! characters from the OS CSPRNG and a 6-character base62 CRC-32 checksum (SPEC §3). Parsing
//! rejects a wrong prefix, length, alphabet or checksum before any storage lookup; storage
//! keeps only the SHA-256.

use auth_contract::credential;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;

/// The kinds of opaque credential and their prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Refresh,
    PersonalAccess,
    ApiKey,
    Service,
}

impl Kind {
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Refresh => credential::REFRESH_PREFIX,
            Self::PersonalAccess => credential::PAT_PREFIX,
            Self::ApiKey => credential::API_KEY_PREFIX,
            Self::Service => credential::SERVICE_PREFIX,
        }
    }

    /// Full length of a well-formed credential of this kind.
    pub const fn text_len(self) -> usize {
        self.prefix().len() + RANDOM_LEN + CHECKSUM_LEN
    }
}

/// A syntactically valid credential; holding one says nothing about whether it is live.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    kind: Kind,
    text: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({})", platform::telemetry::mask(&self.text))
    }
}

fn checksum(prefix: &str, random: &str) -> String {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(prefix.as_bytes());
    hasher.update(random.as_bytes());
    let mut value = u64::from(hasher.finalize());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[usize::try_from(value % 62).unwrap_or(0)];
        value /= 62;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

/// `n` base62 characters from the OS CSPRNG, by rejection sampling so every character is
/// equally likely.
pub fn random_base62(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        if getrandom::fill(&mut buf).is_err() {
            // Without an OS random source no credential can be safe; this is unrecoverable.
            panic!("the operating system's random source failed");
        }
        for &b in &buf {
            // 248 = 4 × 62: bytes at or above it would bias the distribution.
            if b < 248 && out.len() < n {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    out
}

impl Credential {
    pub fn generate(kind: Kind) -> Self {
        let random = random_base62(RANDOM_LEN);
        let sum = checksum(kind.prefix(), &random);
        Self { kind, text: format!("{}{random}{sum}", kind.prefix()) }
    }

    /// Checks the shape and checksum only.
    pub fn parse(kind: Kind, text: &str) -> Option<Self> {
        let body = text.strip_prefix(kind.prefix())?;
        if body.len() != RANDOM_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let (random, sum) = body.split_at(RANDOM_LEN);
        let expected = checksum(kind.prefix(), random);
        bool::from(expected.as_bytes().ct_eq(sum.as_bytes())).then(|| Self { kind, text: text.to_owned() })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The secret itself, to be shown once to its owner.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// What storage keeps.
    pub fn hash(&self) -> String {
        sha256_hex(&self.text)
    }
}

/// A personal access token of the system a team ran before Portcullis, shape-checked
/// ([`credential::Shape::LegacyPat`]: `af_live_` or `af_test_`, then 32 base62 characters).
/// It carries no checksum, so only its stored hash, the SHA-256 every PAT is kept as, tells a
/// real one from a forgery.
#[derive(Clone, PartialEq, Eq)]
pub struct LegacyPat(String);

impl std::fmt::Debug for LegacyPat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LegacyPat({})", platform::telemetry::mask(&self.0))
    }
}

impl LegacyPat {
    pub fn parse(text: &str) -> Option<Self> {
        (credential::Shape::of(text) == Some(credential::Shape::LegacyPat)).then(|| Self(text.to_owned()))
    }

    /// The secret, for the display parts only (prefix and last four).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What storage keeps: the same hash as a native PAT's.
    pub fn hash(&self) -> String {
        sha256_hex(&self.0)
    }
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_parse_and_differ() {
        let a = Credential::generate(Kind::Refresh);
        let b = Credential::generate(Kind::Refresh);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), Kind::Refresh.text_len());
        assert!(a.expose().starts_with("pcr_"));
        assert_eq!(Credential::parse(Kind::Refresh, a.expose()), Some(a.clone()));
        assert_eq!(a.hash().len(), 64);
        assert_ne!(a.hash(), a.expose());
    }

    #[test]
    fn checksum_matches_the_published_scheme() {
        // CRC-32/ISO-HDLC of "pcr_" + 30 zeros, in base62, most significant digit first.
        let random = "0".repeat(30);
        let crc = crc32fast::hash(format!("pcr_{random}").as_bytes());
        let mut v = u64::from(crc);
        let mut s = Vec::new();
        for _ in 0..6 {
            s.push(ALPHABET[usize::try_from(v % 62).unwrap_or(0)]);
            v /= 62;
        }
        s.reverse();
        assert_eq!(checksum("pcr_", &random).as_bytes(), s.as_slice());
    }

    #[test]
    fn legacy_tokens_are_hashed_like_pats() {
        let text = "af_live_0123456789ABCDEFGHIJKLMNOPQRSTUv";
        let legacy = LegacyPat::parse(text).unwrap_or_else(|| panic!("legacy shape refused"));
        assert_eq!(legacy.hash(), sha256_hex(text));
        assert!(!format!("{legacy:?}").contains(&text[8..]), "Debug shows the secret");
        let native = Credential::generate(Kind::PersonalAccess);
        assert!(LegacyPat::parse(native.expose()).is_none(), "a pcp_ token is not a legacy one");
        assert!(LegacyPat::parse(&text[1..]).is_none());
    }

    #[test]
    fn rejects_malformed_before_lookup() {
        let good = Credential::generate(Kind::Refresh).expose().to_owned();
        let mut flipped = good.clone().into_bytes();
        let last = flipped.len() - 8;
        flipped[last] = if flipped[last] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8_lossy(&flipped).into_owned();
        for bad in [
            "",
            "pcr_",
            &good[..good.len() - 1],
            &format!("{good}0"),
            &good.replacen("pcr_", "pcp_", 1),
            &good.replacen("pcr_", "PCR_", 1),
            &format!("{}-{}", &good[..10], &good[11..]),
            &flipped,
        ] {
            assert!(Credential::parse(Kind::Refresh, bad).is_none(), "{bad:?} accepted");
        }
    }
}
