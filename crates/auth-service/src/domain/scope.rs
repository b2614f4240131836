//! Scopes (`resource:action`, or `*`) and the rule for what satisfies what: `*` satisfies
//! anything, `orders:*` satisfies `orders:read`, otherwise only equality.

use std::fmt;

use crate::error::Error;

/// Scopes a credential may carry at most.
pub const MAX_SCOPES: usize = 64;
const MAX_SCOPE_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

fn resource_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
}

impl Scope {
    pub fn all() -> Self {
        Self("*".to_owned())
    }

    /// `[a-z0-9_.-]+:[a-z0-9_.*-]+` or `*`.
    pub fn parse(text: &str) -> Option<Self> {
        if text == "*" {
            return Some(Self::all());
        }
        if text.len() > MAX_SCOPE_LEN {
            return None;
        }
        let (resource, action) = text.split_once(':')?;
        let ok = !resource.is_empty()
            && !action.is_empty()
            && resource.chars().all(resource_char)
            && action.chars().all(|c| resource_char(c) || c == '*');
        ok.then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether holding `self` grants `required`.
    pub fn satisfies(&self, required: &Scope) -> bool {
        if self.0 == "*" || self.0 == required.0 {
            return true;
        }
        match (self.0.split_once(':'), required.0.split_once(':')) {
            (Some((resource, "*")), Some((wanted, _))) => resource == wanted,
            _ => false,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A credential's scopes, deduplicated and sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn all() -> Self {
        Self(vec![Scope::all()])
    }

    /// Parses a request's list; `None` means the default `default`.
    pub fn parse_list(field: &str, raw: Option<&[String]>, default: &Scopes) -> Result<Self, Error> {
        let Some(raw) = raw else {
            return Ok(default.clone());
        };
        if raw.is_empty() {
            return Err(Error::validation(field, "must name at least one scope"));
        }
        if raw.len() > MAX_SCOPES {
            return Err(Error::validation(field, format!("must have at most {MAX_SCOPES} scopes")));
        }
        let mut scopes = raw
            .iter()
            .map(|s| {
                Scope::parse(s)
                    .ok_or_else(|| Error::validation(field, format!("`{s}` is not a scope (resource:action or *)")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        scopes.sort();
        scopes.dedup();
        Ok(Self(scopes))
    }

    /// The storage form: space-separated.
    pub fn to_text(&self) -> String {
        self.0.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    pub fn from_text(text: &str) -> Self {
        let mut scopes: Vec<Scope> = text.split_whitespace().filter_map(Scope::parse).collect();
        scopes.sort();
        scopes.dedup();
        Self(scopes)
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().map(|s| s.0.clone()).collect()
    }

    pub fn satisfies(&self, required: &Scope) -> bool {
        self.0.iter().any(|held| held.satisfies(required))
    }

    /// Every scope of `self` is granted by `granting`.
    pub fn is_subset_of(&self, granting: &Scopes) -> bool {
        self.0.iter().all(|s| granting.satisfies(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Scope {
        Scope::parse(text).unwrap()
    }

    #[test]
    fn grammar() {
        for good in ["*", "orders:read", "orders:*", "a.b-c_d:x.y-z_1", "socket:publish"] {
            assert!(Scope::parse(good).is_some(), "{good}");
        }
        for bad in
            ["", "orders", "Orders:read", "orders:", ":read", "*:read", "orders read", "orders:read:x", "órders:read"]
        {
            assert!(Scope::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn what_satisfies_what() {
        assert!(s("*").satisfies(&s("orders:read")));
        assert!(s("orders:*").satisfies(&s("orders:read")));
        assert!(s("orders:read").satisfies(&s("orders:read")));
        assert!(!s("orders:read").satisfies(&s("orders:write")));
        assert!(!s("orders:*").satisfies(&s("invoices:read")));
        assert!(!s("orders:read").satisfies(&s("orders:*")));
        assert!(!s("orders:read").satisfies(&s("*")));
    }

    #[test]
    fn subsets() {
        let key =
            Scopes::parse_list("scopes", Some(&["orders:*".into(), "users:read".into()]), &Scopes::all()).unwrap();
        let ok = Scopes::parse_list("scopes", Some(&["orders:read".into()]), &Scopes::all()).unwrap();
        let too_much = Scopes::parse_list("scopes", Some(&["users:write".into()]), &Scopes::all()).unwrap();
        assert!(ok.is_subset_of(&key));
        assert!(!too_much.is_subset_of(&key));
        assert!(!Scopes::all().is_subset_of(&key));
        assert!(key.is_subset_of(&Scopes::all()));
        assert_eq!(Scopes::from_text(&key.to_text()), key);
        assert!(Scopes::parse_list("scopes", Some(&[]), &Scopes::all()).is_err());
    }
}
