//! Roles: `member` (the default) and `admin`, as the auth service stores them, its tokens
//! carry them and `X-Role` and route policies name them.

use std::{fmt, str::FromStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Member,
    Admin,
}

/// A role name no Portcullis version knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a role (member or admin)")]
pub struct UnknownRole(pub String);

impl Role {
    pub const ALL: [Self; 2] = [Self::Member, Self::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Self, UnknownRole> {
        Self::ALL.into_iter().find(|role| role.as_str() == text).ok_or_else(|| UnknownRole(text.to_owned()))
    }
}

impl Role {
    /// A role as another Portcullis process sent it (a context over gRPC or in signed
    /// headers): empty is none, and a role this version does not know (a newer peer's) is
    /// none too, with a warning, so it grants nothing while the rest of the context stands.
    pub fn from_wire(text: &str) -> Option<Self> {
        if text.is_empty() {
            return None;
        }
        let role = Self::parse(text).ok();
        if role.is_none() {
            tracing::warn!(role = text, "a context names a role this version does not know; it grants nothing");
        }
        role
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!(Role::parse("Admin"), Err(UnknownRole("Admin".into())), "names are exact");
        assert_eq!(Role::default(), Role::Member);
        assert_eq!(serde_json::to_string(&Role::Admin).ok().as_deref(), Some("\"admin\""));
    }

    #[test]
    fn roles_from_the_wire_are_tolerant() {
        assert_eq!(Role::from_wire("admin"), Some(Role::Admin));
        assert_eq!(Role::from_wire(""), None);
        assert_eq!(Role::from_wire("auditor"), None, "a newer peer's role grants nothing");
    }
}
