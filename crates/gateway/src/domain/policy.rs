//! The pieces of a route's policy: which credential kinds it accepts, the scopes and roles it
//! demands, its rate limit and its body-size limit.

use std::fmt;

/// A kind of credential a route may accept (`auth = [...]` in the routes file). Service
/// tokens are for internal calls and never reach a configured route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialKind {
    User,
    Pat,
    Sdk,
    ApiKey,
}

impl CredentialKind {
    pub const ALL: [Self; 4] = [Self::User, Self::Pat, Self::Sdk, Self::ApiKey];

    /// The name used in the routes file and in `X-Auth-Kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Pat => "pat",
            Self::Sdk => "sdk",
            Self::ApiKey => "api_key",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    fn bit(self) -> u8 {
        match self {
            Self::User => 1,
            Self::Pat => 2,
            Self::Sdk => 4,
            Self::ApiKey => 8,
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`CredentialKind`]s, checked once per request, so it is a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CredentialKinds(u8);

impl CredentialKinds {
    pub fn contains(self, kind: CredentialKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn insert(&mut self, kind: CredentialKind) {
        self.0 |= kind.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every kind in `self` is also in `other`.
    pub fn is_subset_of(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = CredentialKind> {
        CredentialKind::ALL.into_iter().filter(move |kind| self.contains(*kind))
    }
}

impl FromIterator<CredentialKind> for CredentialKinds {
    fn from_iter<I: IntoIterator<Item = CredentialKind>>(iter: I) -> Self {
        let mut set = Self::default();
        for kind in iter {
            set.insert(kind);
        }
        set
    }
}

impl fmt::Display for CredentialKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(CredentialKind::as_str).collect();
        f.write_str(&names.join(", "))
    }
}

/// What a route demands before forwarding. `none` in the routes file is [`RouteAuth::Public`],
/// which cannot be mixed with credential kinds: a request either must prove who it is or
/// need not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAuth {
    Public,
    Required(CredentialKinds),
}

impl RouteAuth {
    pub fn is_public(self) -> bool {
        matches!(self, Self::Public)
    }

    pub fn accepts(self, kind: CredentialKind) -> bool {
        match self {
            Self::Public => true,
            Self::Required(kinds) => kinds.contains(kind),
        }
    }
}

// Scopes and roles are the contract's: one grammar for what the auth service grants and what a
// route requires.
pub use auth_contract::{role::Role, scope::Scope};

/// A size in bytes written `<digits><unit>`, unit `B`, `KB`, `MB`, `GB` (powers of 1000) or
/// `KiB`, `MiB`, `GiB` (powers of 1024); a space between number and unit is allowed. Units are
/// case-sensitive because `mb` (millibit) and `MB` are not the same thing to a careful reader.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{trimmed}` has no unit (use B, KB, MB, GB, KiB, MiB or GiB, e.g. 1MiB)"))?;
    let (digits, unit) = trimmed.split_at(split);
    if digits.is_empty() {
        return Err(format!("`{trimmed}` does not start with a number"));
    }
    let value: u64 = digits.parse().map_err(|_| format!("`{trimmed}` is not a valid number"))?;
    let multiplier: u64 = match unit.trim_start() {
        "B" => 1,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` in `{trimmed}` (use B, KB, MB, GB, KiB, MiB or GiB)")),
    };
    value.checked_mul(multiplier).ok_or_else(|| format!("`{trimmed}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_form_a_set() {
        let set: CredentialKinds =
            [CredentialKind::User, CredentialKind::Pat, CredentialKind::User].into_iter().collect();
        assert!(set.contains(CredentialKind::Pat));
        assert!(!set.contains(CredentialKind::Sdk));
        assert_eq!(set.to_string(), "user, pat");
        assert!(
            set.is_subset_of([CredentialKind::User, CredentialKind::Pat, CredentialKind::Sdk].into_iter().collect())
        );
        assert!(!set.is_subset_of([CredentialKind::User].into_iter().collect()));
        assert!(RouteAuth::Required(set).accepts(CredentialKind::User));
        assert!(!RouteAuth::Required(set).accepts(CredentialKind::ApiKey));
        assert!(RouteAuth::Public.accepts(CredentialKind::ApiKey));
        for kind in CredentialKind::ALL {
            assert_eq!(CredentialKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(CredentialKind::parse("none"), None);
        assert_eq!(CredentialKind::parse("service"), None);
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_byte_size("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_byte_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_byte_size("2KB"), Ok(2000));
        assert_eq!(parse_byte_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_byte_size("0B"), Ok(0));
        for bad in ["", "1", "MiB", "1mib", "1TiB", "1.5MiB", "-1MiB", "99999999999999999999GiB", "1 M"] {
            assert!(parse_byte_size(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_byte_size("18446744073709551615GiB").is_err());
    }
}
