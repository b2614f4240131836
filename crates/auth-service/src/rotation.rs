//! Rotating the auth service's secrets without downtime (`cargo xtask keys rotate`): a new
//! secret is first *staged* among the previous ones, which every verifier accepts, then
//! *promoted* to current once every replica has restarted with it staged (the old one becomes
//! previous, still accepted), then the old one is *pruned* once no token or signature made
//! with it can still be presented. No replica ever rejects what another signed.
//!
//! The secrets live either in an env file (distributed deployments: `JWT_SECRET` with
//! `JWT_PREVIOUS_SECRETS`, `SERVICE_SECRET` with `SERVICE_PREVIOUS_SECRETS`,
//! `CONTEXT_SIGNING_SECRET` with `CONTEXT_SIGNING_PREVIOUS_SECRETS`) or under the embedded
//! mode's `DATA_DIR` (`jwt_secret` with `jwt_secret.previous`, and so on). What was staged or
//! retired when is kept beside them as `keys rotate:` lines (comments in an env file,
//! `keys-rotation.journal` under `DATA_DIR`), naming secrets by `kid` only (a prefix of their
//! SHA-256), never by value. Only the auth service's crate touches `JWT_SECRET`.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use platform::{
    config::checked_secret,
    env::{ConfigError, MapEnv},
};
use secrecy::SecretString;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    config::{CONTEXT_SECRET_FILE, JWT_SECRET_FILE, SERVICE_SECRET_FILE, TokenLifetimes},
    domain::{credential::random_base62, jwt::kid_for},
};

/// The journal's file under `DATA_DIR`.
const JOURNAL_FILE: &str = "keys-rotation.journal";
/// What starts a journal line (after `# ` in an env file).
const MARK: &str = "keys rotate:";

/// A step of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Stage,
    Promote,
    Prune,
}

/// A secret the auth service owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    Jwt,
    Service,
    Context,
}

impl Secret {
    pub const ALL: [Self; 3] = [Self::Jwt, Self::Service, Self::Context];

    /// `jwt`, `service` or `context`, as `--only` names them.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|secret| secret.short() == name)
    }

    fn short(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Service => "service",
            Self::Context => "context",
        }
    }

    pub fn variable(self) -> &'static str {
        match self {
            Self::Jwt => "JWT_SECRET",
            Self::Service => "SERVICE_SECRET",
            Self::Context => "CONTEXT_SIGNING_SECRET",
        }
    }

    pub fn previous_variable(self) -> &'static str {
        match self {
            Self::Jwt => "JWT_PREVIOUS_SECRETS",
            Self::Service => "SERVICE_PREVIOUS_SECRETS",
            Self::Context => "CONTEXT_SIGNING_PREVIOUS_SECRETS",
        }
    }

    fn data_file(self) -> &'static str {
        match self {
            Self::Jwt => JWT_SECRET_FILE,
            Self::Service => SERVICE_SECRET_FILE,
            Self::Context => CONTEXT_SECRET_FILE,
        }
    }

    /// Who must be restarted after a step, for the report.
    fn readers(self) -> &'static str {
        match self {
            Self::Jwt => "every auth-service replica",
            Self::Service => "every auth-service, gateway and socket-service replica",
            Self::Context => {
                "every replica of the auth service, the gateway, the socket service and the services behind the gateway"
            }
        }
    }

    /// How long after it was retired a secret may still be needed: the longest-lived JWT
    /// signed with it (access and SDK tokens), a context header's validity (60 s), or nothing (service tokens
    /// are opaque; the previous service secret is needed only while replicas restart).
    fn horizon(self, lifetimes: &TokenLifetimes) -> Duration {
        match self {
            Self::Jwt => lifetimes.longest(),
            Self::Service => Duration::ZERO,
            Self::Context => Duration::from_secs(auth_contract::headers::MAX_AGE_SECONDS.unsigned_abs()),
        }
    }
}

/// Where the secrets are kept.
#[derive(Debug, Clone)]
pub enum Place {
    /// A distributed deployment's env file (compose's `.env`, a systemd `EnvironmentFile`).
    EnvFile(PathBuf),
    /// The embedded mode's `DATA_DIR`.
    DataDir(PathBuf),
}

/// A rotation that cannot be done; nothing has been written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RotationError(String);

fn fail(message: impl Into<String>) -> RotationError {
    RotationError(message.into())
}

/// The previous secrets embedded mode keeps under `data_dir` for `file` (one per line), or
/// none when there is no such file.
pub(crate) fn kept_previous(data_dir: &Path, file: &str) -> Result<Vec<SecretString>, ConfigError> {
    let path = data_dir.join(previous_file(file));
    match fs::read_to_string(&path) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(|line| checked_secret("DATA_DIR", SecretString::from(line.to_owned())))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ConfigError::new("DATA_DIR", format!("{}: {e}", path.display()))),
    }
}

fn previous_file(file: &str) -> String {
    format!("{file}.previous")
}

/// One secret's values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    current: Option<String>,
    previous: Vec<String>,
}

/// A journal line: `<VARIABLE> <staged|retired> <kid> <RFC 3339>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    variable: String,
    event: Event,
    kid: String,
    at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Staged,
    Retired,
}

impl Entry {
    fn parse(line: &str) -> Option<Self> {
        let rest = line.trim().trim_start_matches('#').trim_start().strip_prefix(MARK)?;
        let [variable, event, kid, at] = rest.split_whitespace().collect::<Vec<_>>().try_into().ok()?;
        let event = match event {
            "staged" => Event::Staged,
            "retired" => Event::Retired,
            _ => return None,
        };
        let at = OffsetDateTime::parse(at, &Rfc3339).ok()?;
        Some(Self { variable: variable.to_owned(), event, kid: kid.to_owned(), at })
    }

    fn render(&self) -> String {
        let event = match self.event {
            Event::Staged => "staged",
            Event::Retired => "retired",
        };
        let at = self.at.format(&Rfc3339).unwrap_or_default();
        format!("{MARK} {} {event} {} {at}", self.variable, self.kid)
    }
}

/// The state of every secret of a place, read whole and written whole.
#[derive(Debug, Clone)]
struct State {
    slots: Vec<(Secret, Slot)>,
    journal: Vec<Entry>,
}

impl State {
    fn slot(&mut self, secret: Secret) -> &mut Slot {
        let index = self.slots.iter().position(|(s, _)| *s == secret).unwrap_or_else(|| {
            self.slots.push((secret, Slot { current: None, previous: Vec::new() }));
            self.slots.len() - 1
        });
        &mut self.slots[index].1
    }

    fn staged(&self, secret: Secret) -> Option<&Entry> {
        self.journal.iter().find(|e| e.variable == secret.variable() && e.event == Event::Staged)
    }

    fn retired(&self, secret: Secret, kid: &str) -> Option<&Entry> {
        self.journal.iter().find(|e| e.variable == secret.variable() && e.event == Event::Retired && e.kid == kid)
    }
}

/// Runs `step` for `secrets` at `place`, at `now`; returns what it did, line by line. Every
/// secret's step is worked out before anything is written, so a refusal writes nothing.
/// Pruning waits out each retired secret's horizon, read from the env file's (or, for
/// `DATA_DIR`, `env`'s) token lifetimes.
pub fn rotate(
    place: &Place,
    step: Step,
    secrets: &[Secret],
    env: &dyn platform::env::Env,
    now: OffsetDateTime,
) -> Result<Vec<String>, RotationError> {
    let mut state = read(place)?;
    let lifetimes = match place {
        Place::EnvFile(path) => TokenLifetimes::from_env(&env_file_values(&read_text(path)?)),
        Place::DataDir(_) => TokenLifetimes::from_env(env),
    }
    .map_err(|e| fail(e.to_string()))?;
    let mut report = Vec::new();
    for &secret in secrets {
        let done = match step {
            Step::Stage => stage(&mut state, secret, now)?,
            Step::Promote => promote(&mut state, secret, now)?,
            Step::Prune => prune(&mut state, secret, secret.horizon(&lifetimes), now),
        };
        report.extend(done);
    }
    write(place, &state)?;
    Ok(report)
}

fn stage(state: &mut State, secret: Secret, now: OffsetDateTime) -> Result<Vec<String>, RotationError> {
    let (name, previous_name) = (secret.variable(), secret.previous_variable());
    if let Some(staged) = state.staged(secret) {
        return Err(fail(format!(
            "{name}: a new secret (kid {}) has been staged since {}; run --promote",
            staged.kid,
            staged.at.format(&Rfc3339).unwrap_or_default()
        )));
    }
    if state.slot(secret).current.is_none() {
        return Err(fail(format!("{name} is not set here: there is nothing to rotate")));
    }
    let new = random_base62(64);
    let kid = kid_for(&new);
    state.slot(secret).previous.insert(0, new);
    state.journal.push(Entry { variable: name.to_owned(), event: Event::Staged, kid: kid.clone(), at: now });
    Ok(vec![format!(
        "{name}: staged a new secret (kid {kid}) in {previous_name}; restart {} with it, then run --promote",
        secret.readers()
    )])
}

fn promote(state: &mut State, secret: Secret, now: OffsetDateTime) -> Result<Vec<String>, RotationError> {
    let (name, previous_name) = (secret.variable(), secret.previous_variable());
    let staged =
        state.staged(secret).cloned().ok_or_else(|| fail(format!("{name}: nothing is staged; run --stage first")))?;
    let slot = state.slot(secret);
    let index = slot.previous.iter().position(|value| kid_for(value) == staged.kid).ok_or_else(|| {
        fail(format!("{name}: the staged secret (kid {}) is no longer in {previous_name}; stage again", staged.kid))
    })?;
    let new = slot.previous.remove(index);
    let old = slot.current.replace(new).ok_or_else(|| fail(format!("{name} is not set here")))?;
    let old_kid = kid_for(&old);
    slot.previous.insert(0, old);
    state.journal.retain(|e| e != &staged);
    state.journal.push(Entry { variable: name.to_owned(), event: Event::Retired, kid: old_kid.clone(), at: now });
    Ok(vec![format!(
        "{name}: promoted kid {} to current; the old one (kid {old_kid}) stays in {previous_name}; restart {}, then run --prune once its tokens have lapsed",
        staged.kid,
        secret.readers()
    )])
}

fn prune(state: &mut State, secret: Secret, horizon: Duration, now: OffsetDateTime) -> Vec<String> {
    let (name, previous_name) = (secret.variable(), secret.previous_variable());
    let staged_kid = state.staged(secret).map(|e| e.kid.clone());
    let mut report = Vec::new();
    let mut kept = Vec::new();
    let previous = std::mem::take(&mut state.slot(secret).previous);
    for value in previous {
        let kid = kid_for(&value);
        if staged_kid.as_deref() == Some(kid.as_str()) {
            report.push(format!("{name}: kid {kid} is staged, not retired: kept"));
            kept.push(value);
            continue;
        }
        let Some(retired) = state.retired(secret, &kid).cloned() else {
            report.push(format!(
                "{name}: kid {kid} in {previous_name} was not retired by keys rotate: kept; remove it by hand once nothing signed with it can be presented"
            ));
            kept.push(value);
            continue;
        };
        let lapses = retired.at + horizon;
        if lapses <= now {
            report.push(format!(
                "{name}: pruned kid {kid} (retired {})",
                retired.at.format(&Rfc3339).unwrap_or_default()
            ));
            state.journal.retain(|e| e != &retired);
        } else {
            report.push(format!(
                "{name}: kid {kid} may still sign live tokens: kept until {}",
                lapses.format(&Rfc3339).unwrap_or_default()
            ));
            kept.push(value);
        }
    }
    if report.is_empty() {
        report.push(format!("{name}: no previous secret"));
    }
    state.slot(secret).previous = kept;
    report
}

fn read_text(path: &Path) -> Result<String, RotationError> {
    fs::read_to_string(path).map_err(|e| fail(format!("{}: {e}", path.display())))
}

/// The values an env file assigns: `NAME=value` and `export NAME=value` lines, quotes removed.
fn env_file_values(text: &str) -> MapEnv {
    MapEnv::new(text.lines().filter_map(assignment).map(|(name, value)| (name.to_owned(), value)))
}

/// `(name, unquoted value)` of an assignment line.
fn assignment(line: &str) -> Option<(&str, String)> {
    let line = line.trim_start();
    let line = line.strip_prefix("export ").map_or(line, str::trim_start);
    let (name, value) = line.split_once('=')?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let value = value.trim();
    let unquoted =
        ['"', '\''].iter().find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q))).unwrap_or(value);
    Some((name, unquoted.to_owned()))
}

fn read(place: &Place) -> Result<State, RotationError> {
    match place {
        Place::EnvFile(path) => {
            let text = read_text(path)?;
            let values = env_file_values(&text);
            let slots = Secret::ALL
                .iter()
                .map(|&secret| {
                    let list = values.0.get(secret.previous_variable()).cloned().unwrap_or_default();
                    let previous =
                        list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
                    let current = values.0.get(secret.variable()).cloned().filter(|v| !v.trim().is_empty());
                    (secret, Slot { current, previous })
                })
                .collect();
            Ok(State { slots, journal: text.lines().filter_map(Entry::parse).collect() })
        }
        Place::DataDir(dir) => {
            let optional = |path: PathBuf| match fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(fail(format!("{}: {e}", path.display()))),
            };
            let mut slots = Vec::new();
            for secret in Secret::ALL {
                let current = optional(dir.join(secret.data_file()))?.map(|v| v.trim().to_owned());
                let previous = optional(dir.join(previous_file(secret.data_file())))?
                    .unwrap_or_default()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
                slots.push((secret, Slot { current, previous }));
            }
            let journal =
                optional(dir.join(JOURNAL_FILE))?.unwrap_or_default().lines().filter_map(Entry::parse).collect();
            Ok(State { slots, journal })
        }
    }
}

fn write(place: &Place, state: &State) -> Result<(), RotationError> {
    match place {
        Place::EnvFile(path) => {
            let mut lines: Vec<String> = read_text(path)?.lines().map(str::to_owned).collect();
            lines.retain(|line| Entry::parse(line).is_none());
            for (secret, slot) in &state.slots {
                if let Some(current) = &slot.current {
                    set_line(&mut lines, secret.variable(), current);
                }
                set_line(&mut lines, secret.previous_variable(), &slot.previous.join(","));
            }
            lines.extend(state.journal.iter().map(|entry| format!("# {}", entry.render())));
            let mut text = lines.join("\n");
            text.push('\n');
            replace_file(path, &text)
        }
        Place::DataDir(dir) => {
            for (secret, slot) in &state.slots {
                if let Some(current) = &slot.current {
                    replace_file(&dir.join(secret.data_file()), current)?;
                }
                let mut previous = slot.previous.join("\n");
                if !previous.is_empty() {
                    previous.push('\n');
                }
                replace_file(&dir.join(previous_file(secret.data_file())), &previous)?;
            }
            let journal: String = state.journal.iter().map(|entry| entry.render() + "\n").collect();
            replace_file(&dir.join(JOURNAL_FILE), &journal)
        }
    }
}

/// Sets `name` on its first assignment line (keeping an `export ` prefix), or appends one;
/// an empty list is written as `NAME=` only where the file already has the line.
fn set_line(lines: &mut Vec<String>, name: &str, value: &str) {
    let found = lines.iter().position(|line| assignment(line).is_some_and(|(n, _)| n == name));
    match found {
        Some(index) => {
            let export = if lines[index].trim_start().starts_with("export ") { "export " } else { "" };
            lines[index] = format!("{export}{name}={value}");
        }
        None if !value.is_empty() => lines.push(format!("{name}={value}")),
        None => {}
    }
}

/// Writes `text` to `path` through a temporary file renamed over it, so a reader never sees
/// half a file; readable by the owner only, as a file of secrets must be.
fn replace_file(path: &Path, text: &str) -> Result<(), RotationError> {
    let failed = |e: std::io::Error| fail(format!("{}: {e}", path.display()));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.rotating"));
    #[cfg(unix)]
    {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(failed)?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(failed)?;
    }
    #[cfg(not(unix))]
    fs::write(&temporary, text).map_err(failed)?;
    fs::rename(&temporary, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::{
        AuthConfig, Mode,
        domain::jwt::{KeyRing, NewToken, TokenType},
    };

    const OLD_JWT: &str = "old-jwt-secret-of-at-least-32-bytes-0123456789";
    const T0: OffsetDateTime = time::macros::datetime!(2026-12-05 12:00 UTC);

    fn env_file(dir: &Path) -> PathBuf {
        let path = dir.join(".env");
        let text = format!(
            "# Portcullis secrets\nexport JWT_SECRET=\"{OLD_JWT}\"\nSERVICE_SECRET=old-service-secret-of-at-least-32-bytes-0123\n\
             # signs context headers\nCONTEXT_SIGNING_SECRET='old-context-secret-of-at-least-32-bytes-012'\nJWT_EXPIRES_IN=1h\n"
        );
        fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// The auth service's configuration a replica started from the env file would have.
    fn replica(path: &Path) -> AuthConfig {
        let mut env = env_file_values(&fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}")));
        env.set("DATABASE_URL", "postgres://x").set("REDIS_URL", "redis://x");
        AuthConfig::from_env(&env, Mode::Distributed).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ring(config: &AuthConfig) -> KeyRing {
        KeyRing::new(&config.jwt.secret, &config.jwt.previous_secrets, "portcullis", "portcullis")
    }

    fn token(ring: &KeyRing) -> String {
        let token = NewToken {
            typ: TokenType::Access,
            subject: "user-1",
            tenant: None,
            session: Some("s"),
            jti: "j",
            role: "member",
            scopes: &[],
            issued_at: T0,
            expires_at: T0 + time::Duration::hours(1),
        };
        ring.sign(&token).unwrap_or_else(|e| panic!("{e}")).0
    }

    fn accepts(ring: &KeyRing, token: &str) -> bool {
        ring.verify(token, TokenType::Access, T0).is_ok()
    }

    fn run(place: &Place, step: Step, now: OffsetDateTime) -> Result<Vec<String>, RotationError> {
        rotate(place, step, &Secret::ALL, &MapEnv::default(), now)
    }

    #[test]
    fn no_replica_rejects_another_replicas_tokens_at_any_step() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = env_file(dir.path());
        let place = Place::EnvFile(path.clone());
        let before = replica(&path);

        let staged_report = run(&place, Step::Stage, T0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(staged_report.len(), 3, "{staged_report:?}");
        let staged = replica(&path);
        assert_eq!(staged.jwt.secret.expose_secret(), OLD_JWT, "staging keeps signing with the old secret");
        assert_eq!(staged.jwt.previous_secrets.len(), 1);
        assert_eq!(staged.service_previous_secrets.len(), 1);

        run(&place, Step::Promote, T0).unwrap_or_else(|e| panic!("{e}"));
        let promoted = replica(&path);
        assert_ne!(promoted.jwt.secret.expose_secret(), OLD_JWT);
        assert_eq!(promoted.jwt.secret.expose_secret(), staged.jwt.previous_secrets[0].expose_secret());
        assert_eq!(promoted.jwt.previous_secrets[0].expose_secret(), OLD_JWT);

        // Rolling restarts: replicas of neighbouring steps run side by side.
        for (a, b) in [(&before, &staged), (&staged, &promoted)] {
            let (a, b) = (ring(a), ring(b));
            assert!(accepts(&b, &token(&a)) && accepts(&a, &token(&b)), "neighbouring steps accept each other");
        }
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.starts_with("# Portcullis secrets\nexport JWT_SECRET="), "comments and export kept:\n{text}");
        assert!(text.contains("# signs context headers\n"), "{text}");
        assert!(
            text.contains(&format!("\nJWT_PREVIOUS_SECRETS={OLD_JWT}\n")),
            "the old secret is the one previous:\n{text}"
        );
    }

    #[test]
    fn steps_out_of_order_are_refused_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = env_file(dir.path());
        let place = Place::EnvFile(path.clone());
        let original = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let err = run(&place, Step::Promote, T0).unwrap_err();
        assert!(err.to_string().contains("nothing is staged"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap_or_default(), original);
        run(&place, Step::Stage, T0).unwrap_or_else(|e| panic!("{e}"));
        let staged = fs::read_to_string(&path).unwrap_or_default();
        let err = run(&place, Step::Stage, T0).unwrap_err();
        assert!(err.to_string().contains("run --promote"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap_or_default(), staged, "a refused stage writes nothing");
        assert!(!err.to_string().contains(OLD_JWT), "no secret in messages");
        let missing = Place::EnvFile(dir.path().join("absent.env"));
        assert!(run(&missing, Step::Stage, T0).is_err());
        let empty = dir.path().join("empty.env");
        fs::write(&empty, "RUST_LOG=info\n").unwrap_or_else(|e| panic!("{e}"));
        let err = run(&Place::EnvFile(empty), Step::Stage, T0).unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET is not set here"), "{err}");
    }

    #[test]
    fn pruning_waits_for_each_secrets_horizon() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = env_file(dir.path());
        let place = Place::EnvFile(path.clone());
        run(&place, Step::Stage, T0).unwrap_or_else(|e| panic!("{e}"));
        run(&place, Step::Promote, T0).unwrap_or_else(|e| panic!("{e}"));
        let hand_added = "an-older-secret-added-by-hand-0123456789abcdef";
        let text = fs::read_to_string(&path).unwrap_or_default();
        let text = text.replace("JWT_PREVIOUS_SECRETS=", &format!("JWT_PREVIOUS_SECRETS={hand_added},"));
        fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));

        // At once: the service secret is no longer needed, the context one is for 60 s and the
        // JWT one for JWT_EXPIRES_IN (1h, the longest with SDK tokens' 15m).
        let report = run(&place, Step::Prune, T0 + time::Duration::seconds(1)).unwrap_or_else(|e| panic!("{e}"));
        let config = replica(&path);
        assert!(config.service_previous_secrets.is_empty(), "{report:?}");
        assert_eq!(config.jwt.previous_secrets.len(), 2, "{report:?}");
        assert!(
            report.iter().any(|l| l.starts_with("JWT_SECRET: kid") && l.contains("kept until 2026-12-05T13:00:00Z")),
            "{report:?}"
        );
        assert!(report.iter().any(|l| l.contains("not retired by keys rotate")), "{report:?}");

        run(&place, Step::Prune, T0 + time::Duration::hours(1)).unwrap_or_else(|e| panic!("{e}"));
        let config = replica(&path);
        let left: Vec<_> = config.jwt.previous_secrets.iter().map(|s| s.expose_secret().to_owned()).collect();
        assert_eq!(left, [hand_added], "the retired secret is pruned, the hand-added one kept");
        let text = fs::read_to_string(&path).unwrap_or_default();
        assert!(!text.contains("retired"), "the journal forgets what was pruned:\n{text}");
        assert!(text.contains("CONTEXT_SIGNING_PREVIOUS_SECRETS=\n"), "{text}");
    }

    #[test]
    fn embedded_secrets_under_data_dir_rotate_the_same_way() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let env = MapEnv::new([("DATA_DIR", dir.path().to_string_lossy().to_string())]);
        let first = AuthConfig::from_env(&env, Mode::Embedded).unwrap_or_else(|e| panic!("{e}"));
        let place = Place::DataDir(dir.path().to_path_buf());
        rotate(&place, Step::Stage, &[Secret::Jwt, Secret::Context], &env, T0).unwrap_or_else(|e| panic!("{e}"));
        let staged = AuthConfig::from_env(&env, Mode::Embedded).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(staged.jwt.secret.expose_secret(), first.jwt.secret.expose_secret());
        assert_eq!(staged.jwt.previous_secrets.len(), 1);
        assert_eq!(staged.context_signing_previous_secrets.len(), 1);
        assert!(staged.service_previous_secrets.is_empty(), "--only leaves the others alone");
        rotate(&place, Step::Promote, &[Secret::Jwt, Secret::Context], &env, T0).unwrap_or_else(|e| panic!("{e}"));
        let promoted = AuthConfig::from_env(&env, Mode::Embedded).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(promoted.jwt.secret.expose_secret(), staged.jwt.previous_secrets[0].expose_secret());
        assert_eq!(promoted.jwt.previous_secrets[0].expose_secret(), first.jwt.secret.expose_secret());
        assert!(accepts(&ring(&promoted), &token(&ring(&first))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(JWT_SECRET_FILE)).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o600));
        }
        let later = T0 + time::Duration::minutes(15);
        rotate(&place, Step::Prune, &Secret::ALL, &env, later).unwrap_or_else(|e| panic!("{e}"));
        let pruned = AuthConfig::from_env(&env, Mode::Embedded).unwrap_or_else(|e| panic!("{e}"));
        assert!(pruned.jwt.previous_secrets.is_empty() && pruned.context_signing_previous_secrets.is_empty());
    }

    #[test]
    fn journal_lines_and_assignments_read_back() {
        let entry = Entry { variable: "JWT_SECRET".into(), event: Event::Retired, kid: "abc".into(), at: T0 };
        assert_eq!(Entry::parse(&format!("# {}", entry.render())), Some(entry.clone()));
        assert_eq!(Entry::parse(&entry.render()), Some(entry));
        assert_eq!(Entry::parse("# keys rotate: JWT_SECRET lost abc 2026-12-05T12:00:00Z"), None);
        assert_eq!(assignment("export A=\"b c\""), Some(("A", "b c".to_owned())));
        assert_eq!(assignment("  B='x'"), Some(("B", "x".to_owned())));
        assert_eq!(assignment("# C=d"), None);
        let mut lines = vec!["export A=1".to_owned(), "B=2".to_owned()];
        set_line(&mut lines, "A", "9");
        set_line(&mut lines, "C", "");
        set_line(&mut lines, "D", "4");
        assert_eq!(lines, ["export A=9", "B=2", "D=4"]);
        assert_eq!(Secret::parse("context"), Some(Secret::Context));
        assert_eq!(Secret::parse("jwt_secret"), None);
    }
}
