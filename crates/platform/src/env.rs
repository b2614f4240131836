//! Reading configuration from the environment through a small trait, so config parsing is
//! unit-tested with a map instead of mutating the process environment; and the tables of
//! variables ([`Variables`]) each service declares, through which alone it reads: every name,
//! default and meaning is written once, in its table, and `docs/configuration.md`, compose and
//! the source are checked against the tables.

use std::{
    cell::RefCell,
    collections::{BTreeSet, HashMap},
    fmt::Display,
    str::FromStr,
    time::Duration,
};

use crate::config::Mode;

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

/// What a variable is when it is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Unset means off, or none.
    Unset,
    /// This value, in both modes (checked: setting it changes nothing).
    Value(&'static str),
    /// A value per mode (checked like [`Fallback::Value`]).
    PerMode { distributed: &'static str, embedded: &'static str },
    /// Computed at start-up, as described.
    Described(&'static str),
    /// Required when the service runs alone; in the all-in-one binary, as described.
    Required { embedded: &'static str },
}

/// One environment variable a service reads: its name, default and meaning, written once.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    pub name: &'static str,
    pub fallback: Fallback,
    /// What it does, for `docs/configuration.md` (Markdown, one line).
    pub doc: &'static str,
    /// Holds a secret: it may be given as a file instead, named by `<name>_FILE` (Docker and
    /// Kubernetes secrets), and is never echoed.
    pub secret: bool,
    /// Read only in this mode (`PORT` by the service's own binary, `AUTH_PORT` by the
    /// all-in-one binary); `None` for both.
    pub only: Option<Mode>,
}

impl Var {
    pub const fn new(name: &'static str, fallback: Fallback, doc: &'static str) -> Self {
        Self { name, fallback, doc, secret: false, only: None }
    }

    /// Marks the variable as a secret (see [`Var::secret`]).
    pub const fn secret(self) -> Self {
        Self { secret: true, ..self }
    }

    /// Read only in `mode`.
    pub const fn only(self, mode: Mode) -> Self {
        Self { only: Some(mode), ..self }
    }

    /// Whether a service in `mode` reads it.
    pub fn read_in(&self, mode: Mode) -> bool {
        self.only.is_none_or(|only| only == mode)
    }

    /// The value it takes when unset in `mode`, where that is a literal.
    pub fn literal_default(&self, mode: Mode) -> Option<&'static str> {
        match (self.fallback, mode) {
            (Fallback::Value(value), _) => Some(value),
            (Fallback::PerMode { distributed, .. }, Mode::Distributed) => Some(distributed),
            (Fallback::PerMode { embedded, .. }, Mode::Embedded) => Some(embedded),
            _ => None,
        }
    }

    /// The name of the variable that may name a file holding this secret's value.
    pub fn file_variable(&self) -> Option<String> {
        self.secret.then(|| format!("{}_FILE", self.name))
    }
}

/// The variables one service reads, in groups (its own and the ones shared through
/// `platform`), and the binary that reads them when the service runs alone.
#[derive(Debug)]
pub struct Variables {
    /// The service's own binary (`auth-service`, `gateway`, `socket-service`); the all-in-one
    /// binary `portcullis` reads the embedded-mode variables of every table.
    pub binary: &'static str,
    pub groups: &'static [&'static [Var]],
}

/// The all-in-one binary, which reads every table's variables in embedded mode.
pub const ALL_IN_ONE: &str = "portcullis";

/// The reader of [`LIBRARY_VARIABLES`].
pub const EVERY_BINARY: &str = "every binary";

impl Variables {
    pub fn iter(&self) -> impl Iterator<Item = &'static Var> + '_ {
        self.groups.iter().flat_map(|group| group.iter())
    }

    pub fn get(&self, name: &str) -> Option<&'static Var> {
        self.iter().find(|var| var.name == name)
    }

    /// The binaries that read `var`, for the documentation.
    pub fn readers(&self, var: &Var) -> Vec<&'static str> {
        if self.binary == EVERY_BINARY {
            return vec![EVERY_BINARY];
        }
        [(Mode::Distributed, self.binary), (Mode::Embedded, ALL_IN_ONE)]
            .into_iter()
            .filter(|(mode, _)| var.read_in(*mode))
            .map(|(_, binary)| binary)
            .collect()
    }

    /// `env` as this service may read it: only the table's variables, a secret from the file
    /// its `<name>_FILE` names when that is set (read now; an unreadable file, or both forms
    /// set, is an error naming the variable).
    pub fn scope<'a>(&'static self, env: &'a dyn Env) -> Result<Scoped<'a>, ConfigError> {
        let mut files = HashMap::new();
        for var in self.iter() {
            let Some(file_variable) = var.file_variable() else { continue };
            let Some(path) = env.string(&file_variable) else { continue };
            if env.string(var.name).is_some() {
                return Err(ConfigError::new(
                    var.name,
                    format!("is set and so is {file_variable}: give the value one way only"),
                ));
            }
            let value = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new(&file_variable, format!("cannot read {path}: {e}")))?;
            let value = value.trim_end_matches(['\n', '\r']).to_owned();
            if value.trim().is_empty() {
                return Err(ConfigError::new(&file_variable, format!("{path} is empty")));
            }
            files.insert(var.name, value);
        }
        Ok(Scoped { table: self, base: env, files })
    }

    /// The Markdown table of `docs/configuration.md` for these variables.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| variable | default | read by | meaning |\n|---|---|---|---|\n");
        for var in self.iter() {
            let name = match var.file_variable() {
                Some(file) => format!("`{}` (or `{file}`)", var.name),
                None => format!("`{}`", var.name),
            };
            let fallback = match var.fallback {
                Fallback::Unset => "—".to_owned(),
                Fallback::Value(value) => format!("`{value}`"),
                Fallback::PerMode { distributed, embedded } => {
                    format!("`{distributed}` ({}), `{embedded}` ({ALL_IN_ONE})", self.binary)
                }
                Fallback::Described(text) => text.to_owned(),
                Fallback::Required { embedded } => format!("required ({}); {embedded} ({ALL_IN_ONE})", self.binary),
            };
            let readers = self.readers(var).join(", ");
            out.push_str(&format!("| {name} | {fallback} | {readers} | {} |\n", var.doc));
        }
        out
    }
}

/// An [`Env`] limited to one service's [`Variables`]. Reading a variable the table does not
/// declare is a defect: debug builds (and so every test) panic, release builds see it unset.
pub struct Scoped<'a> {
    table: &'static Variables,
    base: &'a dyn Env,
    files: HashMap<&'static str, String>,
}

impl Env for Scoped<'_> {
    fn var(&self, name: &str) -> Option<String> {
        // A secret's file was read when the scope was made: its value is the secret's own, so
        // a scope made over this one sees no file left to read.
        let resolved_file =
            name.strip_suffix("_FILE").and_then(|secret| self.table.get(secret)).is_some_and(|v| v.secret);
        if resolved_file {
            return None;
        }
        let Some(var) = self.table.get(name) else {
            debug_assert!(false, "{name} is read but not declared in the {} table of variables", self.table.binary);
            return None;
        };
        self.files.get(var.name).cloned().or_else(|| self.base.var(name))
    }
}

/// An [`Env`] that remembers every name asked of it: tests prove with it that a service
/// reads each variable its table declares.
pub struct Recorder<'a> {
    base: &'a dyn Env,
    asked: RefCell<BTreeSet<String>>,
}

impl<'a> Recorder<'a> {
    pub fn new(base: &'a dyn Env) -> Self {
        Self { base, asked: RefCell::default() }
    }

    /// The names asked so far, `*_FILE` lookups left out.
    pub fn asked(&self) -> BTreeSet<String> {
        self.asked.borrow().iter().filter(|name| !name.ends_with("_FILE")).cloned().collect()
    }
}

impl Env for Recorder<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.asked.borrow_mut().insert(name.to_owned());
        self.base.var(name)
    }
}

/// Checks a service's table against what its configuration reads: `parse` is run in both
/// modes on `base(mode)` (an environment it accepts), and every variable it reads must be
/// declared (the [`Scoped`] guard panics otherwise) and every declared one read; then every
/// literal default, set explicitly, must give the same configuration as leaving it unset.
/// Returns what disagrees, for the test to print.
pub fn check_table<C: std::fmt::Debug>(
    table: &'static Variables,
    base: impl Fn(Mode) -> MapEnv,
    parse: impl Fn(&dyn Env, Mode) -> Result<C, ConfigError>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut asked = BTreeSet::new();
    for mode in [Mode::Distributed, Mode::Embedded] {
        let env = base(mode);
        let recorder = Recorder::new(&env);
        let reference = match parse(&recorder, mode) {
            Ok(config) => format!("{config:?}"),
            Err(e) => {
                problems.push(format!("{mode:?}: the base environment is refused: {e}"));
                continue;
            }
        };
        asked.extend(recorder.asked());
        for var in table.iter().filter(|var| var.read_in(mode) && env.var(var.name).is_none()) {
            let Some(default) = var.literal_default(mode) else { continue };
            let mut explicit = env.clone();
            explicit.set(var.name, default);
            match parse(&explicit, mode) {
                Ok(config) if format!("{config:?}") == reference => {}
                Ok(_) => problems.push(format!(
                    "{mode:?}: {}={default} (its documented default) changes the configuration",
                    var.name
                )),
                Err(e) => {
                    problems.push(format!("{mode:?}: {}={default} (its documented default) is refused: {e}", var.name))
                }
            }
        }
    }
    for var in table.iter().filter(|var| !asked.contains(var.name)) {
        problems.push(format!("{} is declared but never read", var.name));
    }
    problems
}

/// Variables read by libraries rather than through a table: listed so the documentation and
/// the source scan know them.
pub static LIBRARY_VARIABLES: Variables = Variables {
    binary: EVERY_BINARY,
    groups: &[
        &[
            Var::new("RUST_LOG", Fallback::Value("info"), "log filter (`tracing-subscriber`'s `EnvFilter` syntax)"),
            Var::new(
                "TOKIO_WORKER_THREADS",
                Fallback::Described("the CPUs"),
                "threads of the async runtime (tokio reads it; for the standalone gateway see its table)",
            ),
        ],
        crate::otel::VARIABLES,
    ],
};

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
