//! Scopes: the one grammar (`resource:action` in `[a-z0-9_.-]`, the action may hold `*`, or
//! `*` alone) and the one rule for what satisfies what (`*` satisfies anything, `orders:*`
//! satisfies `orders:read`, otherwise only equality), for the auth service that grants scopes,
//! the gateway whose routes require them and every service that checks a context.

use std::fmt;

/// Scopes a credential may carry at most.
pub const MAX_SCOPES: usize = 64;
const MAX_SCOPE_LEN: usize = 128;
const ALL: &str = "*";

/// Why a list of scopes was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("must name at least one scope")]
    Empty,
    #[error("must have at most {MAX_SCOPES} scopes")]
    TooMany,
    #[error("`{0}` is not a scope (resource:action in lowercase, e.g. orders:read, or *)")]
    NotAScope(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

fn resource_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
}

impl Scope {
    pub fn all() -> Self {
        Self(ALL.to_owned())
    }

    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        if is_scope(text) { Ok(Self(text.to_owned())) } else { Err(ScopeError::NotAScope(text.to_owned())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether holding `self` grants `required`.
    pub fn satisfies(&self, required: &Scope) -> bool {
        satisfies(&self.0, &required.0)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The grammar, on text.
fn is_scope(text: &str) -> bool {
    text == ALL
        || text.len() <= MAX_SCOPE_LEN
            && text.split_once(':').is_some_and(|(resource, action)| {
                !resource.is_empty()
                    && !action.is_empty()
                    && resource.chars().all(resource_char)
                    && action.chars().all(|c| resource_char(c) || c == '*')
            })
}

/// The one rule, on well-formed text.
fn satisfies(held: &str, required: &str) -> bool {
    if held == ALL || held == required {
        return true;
    }
    match (held.split_once(':'), required.split_once(':')) {
        (Some((resource, "*")), Some((wanted, _))) => resource == wanted,
        _ => false,
    }
}

/// Whether scopes held as text (a context's) grant `required`, without allocating (every
/// authenticated request asks); text that is not a scope, held or required, grants nothing.
pub fn grants<'a>(held: impl IntoIterator<Item = &'a str>, required: &str) -> bool {
    is_scope(required) && held.into_iter().any(|text| is_scope(text) && satisfies(text, required))
}

/// A credential's scopes, deduplicated and sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn all() -> Self {
        Self(vec![Scope::all()])
    }

    /// A request's list: at least one, at most [`MAX_SCOPES`], each well-formed.
    pub fn parse_list(raw: &[String]) -> Result<Self, ScopeError> {
        if raw.is_empty() {
            return Err(ScopeError::Empty);
        }
        if raw.len() > MAX_SCOPES {
            return Err(ScopeError::TooMany);
        }
        let mut scopes = raw.iter().map(|s| Scope::parse(s)).collect::<Result<Vec<_>, _>>()?;
        scopes.sort();
        scopes.dedup();
        Ok(Self(scopes))
    }

    /// The storage and header form: space-separated.
    pub fn to_text(&self) -> String {
        self.0.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    /// The storage form back; anything that is not a scope is dropped.
    pub fn from_text(text: &str) -> Self {
        let mut scopes: Vec<Scope> = text.split_whitespace().filter_map(|s| Scope::parse(s).ok()).collect();
        scopes.sort();
        scopes.dedup();
        Self(scopes)
    }

    /// Scopes as another Portcullis process sent them (a context over gRPC or in signed
    /// headers), kept in their order. Text that is not a scope (a newer peer's grammar, say)
    /// is dropped with a warning: it grants nothing, and the rest of the context stands.
    pub fn from_wire<'a>(items: impl IntoIterator<Item = &'a str>) -> Self {
        let mut scopes = Vec::new();
        for text in items {
            match Scope::parse(text) {
                Ok(scope) => scopes.push(scope),
                Err(_) => tracing::warn!(
                    scope = text,
                    "a context names a scope this version does not know; it grants nothing"
                ),
            }
        }
        Self(scopes)
    }

    /// The scopes as text, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(Scope::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
        Scope::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn list(items: &[&str]) -> Scopes {
        Scopes::parse_list(&items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn grammar() {
        for good in ["*", "orders:read", "orders:*", "a.b-c_d:x.y-z_1", "a.b-c_d:x.y-z*", "socket:publish", "v2:read"] {
            assert!(Scope::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "orders",
            "Orders:read",
            "orders:",
            ":read",
            "*:read",
            "orders read",
            "orders:read:x",
            "órders:read",
            "**",
            "or ders:read",
        ] {
            assert_eq!(Scope::parse(bad), Err(ScopeError::NotAScope(bad.to_owned())), "{bad:?}");
        }
        assert!(Scope::parse(&format!("{}:read", "a".repeat(200))).is_err());
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
        assert!(grants(["junk", "orders:*"], "orders:read"));
        assert!(!grants(["junk:*x y"], "junk:read"), "text that is not a scope grants nothing");
        assert!(!grants(["*"], "Not A Scope"), "nor is text that is not a scope granted");
    }

    #[test]
    fn subsets_and_lists() {
        let key = list(&["orders:*", "users:read"]);
        assert!(list(&["orders:read"]).is_subset_of(&key));
        assert!(!list(&["users:write"]).is_subset_of(&key));
        assert!(!Scopes::all().is_subset_of(&key));
        assert!(key.is_subset_of(&Scopes::all()));
        assert_eq!(Scopes::from_text(&key.to_text()), key);
        assert_eq!(list(&["b:x", "a:x", "b:x"]).to_vec(), ["a:x", "b:x"]);
        assert_eq!(Scopes::parse_list(&[]), Err(ScopeError::Empty));
        assert_eq!(Scopes::parse_list(&vec!["a:b".to_owned(); MAX_SCOPES + 1]), Err(ScopeError::TooMany));
    }
}
