//! Email addresses, normalised to lower case so one mailbox is one account.

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &str, raw: &str) -> Result<Self, Error> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Error::validation(field, "is required"));
        }
        if trimmed.len() > 254 {
            return Err(Error::validation(field, "must be at most 254 characters"));
        }
        let lowered = trimmed.to_lowercase();
        let valid = email_address::EmailAddress::parse_with_options(
            &lowered,
            email_address::Options::default().without_display_text().without_domain_literal(),
        )
        .is_ok()
            && lowered.rsplit_once('@').is_some_and(|(_, domain)| domain.contains('.') && !domain.ends_with('.'));
        if valid { Ok(Self(lowered)) } else { Err(Error::validation(field, "is not a valid email address")) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_normalises() {
        assert_eq!(Email::parse("email", " Ada@Example.COM ").map(|e| e.0).ok(), Some("ada@example.com".into()));
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "Ada <ada@example.com>",
            "ada@[127.0.0.1]",
        ] {
            assert!(Email::parse("email", bad).is_err(), "{bad:?} accepted");
        }
    }
}
