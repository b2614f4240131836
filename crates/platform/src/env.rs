//! Reading configuration from the environment through a small trait, so config parsing is
//! unit-tested with a map instead of mutating the process environment.

use std::{collections::HashMap, fmt::Display, str::FromStr, time::Duration};

use secrecy::SecretString;

/// A source of configuration variables.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsEnv;

impl Env for OsEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A fixed set of variables, for tests and for services embedded in one process.
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub HashMap<String, String>);

impl MapEnv {
    pub fn new<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(name.into(), value.into());
        self
    }
}

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// Variables from `top` where set, else from `base`: how the all-in-one binary hands a
/// service the addresses its neighbours actually bound.
pub struct Overlay<'a> {
    pub top: MapEnv,
    pub base: &'a dyn Env,
}

impl Env for Overlay<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.top.var(name).or_else(|| self.base.var(name))
    }
}

/// A configuration variable that is missing or malformed; the process exits with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error in {variable}: {message}")]
pub struct ConfigError {
    pub variable: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(variable: &str, message: impl Display) -> Self {
        Self { variable: variable.to_owned(), message: message.to_string() }
    }
}

/// Typed accessors over any [`Env`]; empty values count as unset.
pub trait EnvExt: Env {
    fn string(&self, name: &str) -> Option<String> {
        self.var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn string_or(&self, name: &str, default: &str) -> String {
        self.string(name).unwrap_or_else(|| default.to_owned())
    }

    fn secret(&self, name: &str) -> Option<SecretString> {
        self.string(name).map(SecretString::from)
    }

    fn parsed_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.string(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e| ConfigError::new(name, format!("`{raw}` is not valid: {e}"))),
        }
    }

    fn bool_or(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.string(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::new(name, format!("`{v}` is not true or false"))),
        }
    }

    fn duration_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.string(name) {
            None => Ok(default),
            Some(raw) => crate::duration::parse_duration(&raw).map_err(|e| ConfigError::new(name, e)),
        }
    }
}

impl<T: Env + ?Sized> EnvExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_accessors_read_and_name_the_variable() {
        let env = MapEnv::new([("A", " 5 "), ("B", "maybe"), ("C", "15m"), ("D", "")]);
        assert_eq!(env.parsed_or("A", 1u32), Ok(5));
        assert_eq!(env.parsed_or("Z", 7u32), Ok(7));
        assert_eq!(env.string("D"), None);
        let err = env.bool_or("B", true).unwrap_err();
        assert_eq!(err.variable, "B");
        assert_eq!(env.duration_or("C", Duration::ZERO), Ok(Duration::from_secs(900)));
        assert!(env.parsed_or::<u32>("B", 1).is_err());
    }
}
