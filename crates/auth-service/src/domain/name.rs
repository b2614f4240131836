//! A user's display name.

use crate::error::Error;

pub const MAX_NAME_CHARS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub fn parse(field: &str, raw: &str) -> Result<Self, Error> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Error::validation(field, "is required"));
        }
        if trimmed.chars().count() > MAX_NAME_CHARS {
            return Err(Error::validation(field, format!("must be at most {MAX_NAME_CHARS} characters")));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(Error::validation(field, "must not contain control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(Name::parse("name", " Ada Lovelace ").is_ok());
        assert!(Name::parse("name", "   ").is_err());
        assert!(Name::parse("name", "a\u{0}b").is_err());
        assert!(Name::parse("name", &"x".repeat(101)).is_err());
    }
}
