//! The auth service's typed configuration, read once from the environment (SPEC §8) and
//! validated at start-up; a bad value stops the process naming the variable.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

pub use platform::config::Mode;
use platform::{
    config::checked_secret,
    env::{ConfigError, Env, EnvExt, Fallback, Var, Variables},
    net::TrustedProxies,
};
use secrecy::SecretString;

/// Every variable the auth service reads (SPEC §8), in `docs/configuration.md` by a test.
pub static VARIABLES: Variables =
    Variables { binary: "auth-service", groups: &[AUTH_VARIABLES, platform::config::COMMON_VARIABLES] };

const GENERATED: Fallback = Fallback::Required { embedded: "generated under `DATA_DIR` (mode 0600)" };

const AUTH_VARIABLES: &[Var] = &[
    Var::new(
        "DATABASE_URL",
        Fallback::Required { embedded: "unset: SQLite `portcullis.db` under `DATA_DIR`" },
        "PostgreSQL URL; with `REDIS_URL`, switches the all-in-one binary to PostgreSQL + Redis",
    )
    .secret(),
    Var::new(
        "REDIS_URL",
        Fallback::Required { embedded: "unset: the in-process bus and counters" },
        "Redis URL for the bus and rate-limit counters; set together with `DATABASE_URL`",
    )
    .secret(),
    Var::new(
        "DATA_DIR",
        Fallback::Value("./data"),
        "embedded mode: the SQLite file `portcullis.db`, the generated secrets, the webhook spool",
    ),
    Var::new("JWT_SECRET", GENERATED, "HS256 signing secret, at least 32 bytes").secret(),
    Var::new(
        "JWT_PREVIOUS_SECRETS",
        Fallback::Unset,
        "comma-separated older secrets still accepted for verification (rotation; embedded: kept under `DATA_DIR` by `keys rotate` when unset)",
    )
    .secret(),
    Var::new(
        "SERVICE_SECRET",
        GENERATED,
        "at least 32 bytes; what internal services prove to obtain a service token",
    )
    .secret(),
    Var::new(
        "SERVICE_PREVIOUS_SECRETS",
        Fallback::Unset,
        "comma-separated older service secrets still accepted when a service token is asked for (rotation)",
    )
    .secret(),
    Var::new(
        "CONTEXT_SIGNING_SECRET",
        GENERATED,
        "at least 32 bytes; signs context headers (forward-auth mirrors, gateway)",
    )
    .secret(),
    Var::new(
        "CONTEXT_SIGNING_PREVIOUS_SECRETS",
        Fallback::Described("kept under `DATA_DIR` by `keys rotate`"),
        "older context secrets the all-in-one binary's socket service still accepts (rotation)",
    )
    .secret()
    .only(Mode::Embedded),
    Var::new("PORT", Fallback::Value("4001"), "HTTP port; `0` picks a free one (printed at start-up)")
        .only(Mode::Distributed),
    Var::new("AUTH_PORT", Fallback::Value("4001"), "the auth service's HTTP port; `0` picks a free one")
        .only(Mode::Embedded),
    Var::new("GRPC_PORT", Fallback::Value("50051"), "gRPC port; `0` picks a free one").only(Mode::Distributed),
    Var::new("AUTH_GRPC_PORT", Fallback::Value("50051"), "the auth service's gRPC port; `0` picks a free one")
        .only(Mode::Embedded),
    Var::new("JWT_ISSUER", Fallback::Value("portcullis"), "`iss` set and required"),
    Var::new("JWT_AUDIENCE", Fallback::Value("portcullis"), "`aud` set and required"),
    Var::new("JWT_EXPIRES_IN", Fallback::Value("15m"), "access-token lifetime (`30s`, `15m`, `1h`, `7d` form)"),
    Var::new("JWT_REFRESH_EXPIRES_IN", Fallback::Value("7d"), "refresh-token lifetime"),
    Var::new("SESSION_TIMEOUT_MINUTES", Fallback::Value("30"), "idle timeout"),
    Var::new("SESSION_LIFETIME_HOURS", Fallback::Value("168"), "absolute session lifetime"),
    Var::new("MAX_SESSIONS_PER_USER", Fallback::Value("5"), "live sessions per user; the oldest is ended beyond it"),
    Var::new(
        "REFRESH_REUSE_GRACE_SECONDS",
        Fallback::Value("10"),
        "a spent refresh token within this window gets 409, later it ends the session",
    ),
    Var::new("PASSWORD_MIN_LENGTH", Fallback::Value("8"), "8–256"),
    Var::new(
        "PASSWORD_HASH_CONCURRENCY",
        Fallback::Described("cores − 1 (≥ 1)"),
        "Argon2id jobs at once; a started hash holds its slot to the end, even if its client hung up",
    ),
    Var::new(
        "PASSWORD_HASH_QUEUE",
        Fallback::Described("4 × `PASSWORD_HASH_CONCURRENCY`"),
        "hashes that may wait for a slot; past that, signup, login and password change answer 503 `unavailable` with `Retry-After` (not counted against the login limits)",
    ),
    Var::new(
        "TENANT_RATE_LIMIT_MAX",
        Fallback::Unset,
        "the fastest limit a client may set as its own (`10000/minute`); `PUT /client/{id}/rate-limit` above it is 422",
    ),
    Var::new("CLEANUP_INTERVAL", Fallback::Value("1h"), "background deletion of expired rows"),
    Var::new("IP_WHITELIST_ENABLED", Fallback::Value("true"), "enforce clients' IP allowlists for API keys"),
    Var::new(
        "ORIGIN_VALIDATION_ENABLED",
        Fallback::Value("true"),
        "enforce clients' origins for API keys and SDK tokens",
    ),
    Var::new(
        "PAT_MAX_PER_USER",
        Fallback::Value("50"),
        "live (unrevoked, unexpired) personal access tokens per user; imported legacy tokens do not count",
    ),
    Var::new(
        "LEGACY_PAT_ACCEPT_UNTIL",
        Fallback::Unset,
        "RFC 3339 instant with its offset (`2026-03-31T00:00:00Z`): personal access tokens imported with `cargo xtask import-pats` ([migration.md](migration.md)) are accepted as PATs of their users strictly before it, by the service's clock; unset or past, they get the 401 `token_invalid` of an unknown token",
    ),
    Var::new(
        "SDK_TOKEN_EXPIRES_IN",
        Fallback::Value("15m"),
        "SDK access-token lifetime (never past the SDK session's end)",
    ),
    Var::new("SERVICE_TOKEN_EXPIRES_IN", Fallback::Value("10m"), "service-token lifetime"),
    Var::new(
        "INTERNAL_LOOPBACK_ONLY",
        Fallback::Value("false"),
        "the internal HTTP mirrors accept unforwarded loopback callers without a service token",
    ),
];
/// Where embedded mode keeps each generated secret, under `DATA_DIR`.
pub(crate) const JWT_SECRET_FILE: &str = "jwt_secret";
pub(crate) const SERVICE_SECRET_FILE: &str = "service_secret";
pub(crate) const CONTEXT_SECRET_FILE: &str = "context_signing_secret";

/// The lifetimes of the tokens signed with `JWT_SECRET` (access and SDK tokens; refresh
/// tokens are opaque): a retired secret must be accepted for the longest of them.
#[derive(Debug, Clone, Copy)]
pub struct TokenLifetimes {
    /// `JWT_EXPIRES_IN`.
    pub access: Duration,
    /// `SDK_TOKEN_EXPIRES_IN`.
    pub sdk: Duration,
}

impl TokenLifetimes {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let env = &VARIABLES.scope(env)?;
        Ok(Self {
            access: at_least_a_second(env, "JWT_EXPIRES_IN", Duration::from_secs(15 * 60))?,
            sdk: at_least_a_second(env, "SDK_TOKEN_EXPIRES_IN", Duration::from_secs(15 * 60))?,
        })
    }

    /// How long a token signed now may be presented.
    pub fn longest(&self) -> Duration {
        self.access.max(self.sdk)
    }
}

fn at_least_a_second(env: &dyn Env, variable: &str, default: Duration) -> Result<Duration, ConfigError> {
    let ttl = env.duration_or(variable, default)?;
    if ttl < Duration::from_secs(1) {
        return Err(ConfigError::new(variable, "must be at least 1s"));
    }
    Ok(ttl)
}

/// Where state lives.
#[derive(Debug, Clone)]
pub enum Backend {
    Embedded { data_dir: PathBuf },
    Shared { database_url: SecretString, redis_url: SecretString },
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub secret: SecretString,
    pub previous_secrets: Vec<SecretString>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub mode: Mode,
    pub host: IpAddr,
    pub port: u16,
    pub backend: Backend,
    pub jwt: JwtConfig,
    pub session_idle_timeout: Duration,
    pub session_lifetime: Duration,
    pub max_sessions_per_user: u32,
    pub refresh_reuse_grace: Duration,
    pub password_min_length: usize,
    pub password_hash_concurrency: usize,
    /// `AUTH_FAILURE_LIMIT` (default `60/minute`): invalid credentials per client IP on the
    /// HTTP routes, reserved before each is validated.
    pub auth_failure_limit: platform::rate::RateLimit,
    /// `TENANT_RATE_LIMIT_MAX`: the fastest limit a client may set as its own (422 past it).
    pub tenant_rate_limit_max: Option<platform::rate::RateLimit>,
    /// `PASSWORD_HASH_QUEUE`: hashes that may wait for a free hashing thread; past that, 503.
    pub password_hash_queue: usize,
    pub trusted_proxies: TrustedProxies,
    pub cleanup_interval: Duration,
    pub body_limit: usize,
    pub log_json: bool,
    /// `HTTP_HEADER_READ_TIMEOUT` and `HTTP_MAX_CONNECTIONS` of the HTTP listener.
    pub listener: platform::serve::ListenerLimits,
    /// Prefix of every Redis key this service writes (rate-limit counters).
    pub redis_key_prefix: String,
    /// `IP_WHITELIST_ENABLED`: enforce clients' IP allowlists for API keys.
    pub ip_allowlist_enabled: bool,
    /// `ORIGIN_VALIDATION_ENABLED`: enforce clients' origins for API keys and SDK tokens.
    pub origin_validation_enabled: bool,
    /// `PAT_MAX_PER_USER`: live personal access tokens per user.
    pub pat_max_per_user: u32,
    /// `SDK_TOKEN_EXPIRES_IN`: SDK access-token lifetime.
    pub sdk_token_ttl: Duration,
    /// `SERVICE_SECRET`: what an internal service proves to obtain a service token.
    pub service_secret: SecretString,
    /// `SERVICE_PREVIOUS_SECRETS`: older service secrets still accepted during a rotation.
    pub service_previous_secrets: Vec<SecretString>,
    /// `CONTEXT_SIGNING_PREVIOUS_SECRETS` (all-in-one binary only): older context secrets the
    /// binary hands to the socket service, which verifies context headers.
    pub context_signing_previous_secrets: Vec<SecretString>,
    /// `SERVICE_TOKEN_EXPIRES_IN`: service-token lifetime.
    pub service_token_ttl: Duration,
    /// `CONTEXT_SIGNING_SECRET`: signs the context headers of the forward-auth mirror.
    pub context_signing_secret: SecretString,
    /// `GRPC_PORT` (`AUTH_GRPC_PORT` in the all-in-one binary).
    pub grpc_port: u16,
    /// `INTERNAL_LOOPBACK_ONLY`: the internal HTTP mirrors accept unforwarded loopback callers
    /// without a service token.
    pub internal_loopback_only: bool,
    /// `LEGACY_PAT_ACCEPT_UNTIL` (RFC 3339): personal access tokens imported from the system a
    /// team ran before are accepted strictly before this instant; unset, never.
    pub legacy_pat_accept_until: Option<time::OffsetDateTime>,
}

/// `LEGACY_PAT_ACCEPT_UNTIL`: an RFC 3339 instant (`2026-03-31T00:00:00Z`), or unset.
fn legacy_pat_accept_until(env: &dyn Env) -> Result<Option<time::OffsetDateTime>, ConfigError> {
    const VARIABLE: &str = "LEGACY_PAT_ACCEPT_UNTIL";
    let Some(raw) = env.string(VARIABLE).filter(|v| !v.trim().is_empty()) else { return Ok(None) };
    time::OffsetDateTime::parse(raw.trim(), &time::format_description::well_known::Rfc3339).map(Some).map_err(|_| {
        ConfigError::new(VARIABLE, "must be an RFC 3339 date and time with its offset, like 2026-03-31T00:00:00Z")
    })
}

fn default_hash_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// Reads an embedded-mode secret from `DATA_DIR`, creating it (mode 0600) the first time.
pub fn load_or_create_secret(data_dir: &Path, file: &str) -> Result<SecretString, ConfigError> {
    let path = data_dir.join(file);
    let fail = |e: std::io::Error| ConfigError::new("DATA_DIR", format!("{}: {e}", path.display()));
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return checked_secret("DATA_DIR", SecretString::from(existing.trim().to_owned()));
    }
    platform::fs::private_dir(data_dir).map_err(fail)?;
    let secret = crate::domain::credential::random_base62(64);
    #[cfg(unix)]
    {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(fail)?;
        file.write_all(secret.as_bytes()).map_err(fail)?;
    }
    #[cfg(not(unix))]
    std::fs::write(&path, &secret).map_err(fail)?;
    Ok(SecretString::from(secret))
}

impl AuthConfig {
    /// What an operator should fix though the service can run: said once at start-up.
    pub fn warnings(&self) -> Vec<String> {
        use secrecy::ExposeSecret as _;
        let mut warnings = Vec::new();
        if self.mode == Mode::Distributed && self.trusted_proxies.is_empty() {
            warnings.push(
                "TRUSTED_PROXIES is empty: behind the gateway every client looks like the gateway, so the per-IP \
                 login limits lock everyone out at once; set it to the gateway's address"
                    .to_owned(),
            );
        }
        let secrets = [
            ("JWT_SECRET", self.jwt.secret.expose_secret()),
            ("SERVICE_SECRET", self.service_secret.expose_secret()),
            ("CONTEXT_SIGNING_SECRET", self.context_signing_secret.expose_secret()),
        ];
        for (i, (a, first)) in secrets.iter().enumerate() {
            for (b, second) in &secrets[i + 1..] {
                if first == second {
                    warnings.push(format!(
                        "{a} and {b} are equal: whoever holds one can use the other's power; give each its own secret"
                    ));
                }
            }
        }
        warnings
    }

    pub fn from_env(env: &dyn Env, mode: Mode) -> Result<Self, ConfigError> {
        let env = &VARIABLES.scope(env)?;
        let (port_var, grpc_port_var, default_host) = match mode {
            Mode::Embedded => ("AUTH_PORT", "AUTH_GRPC_PORT", "127.0.0.1"),
            Mode::Distributed => ("PORT", "GRPC_PORT", "0.0.0.0"),
        };
        let data_dir = PathBuf::from(env.string_or("DATA_DIR", "./data"));
        let backend = match (env.secret("DATABASE_URL"), env.secret("REDIS_URL"), mode) {
            (Some(database_url), Some(redis_url), _) => Backend::Shared { database_url, redis_url },
            (None, _, Mode::Distributed) => {
                return Err(ConfigError::new("DATABASE_URL", "is required when the auth service runs alone"));
            }
            (_, None, Mode::Distributed) => {
                return Err(ConfigError::new(
                    "REDIS_URL",
                    "is required when the auth service runs alone: its events must reach the other services",
                ));
            }
            (Some(_), None, Mode::Embedded) => {
                return Err(ConfigError::new("REDIS_URL", "must be set together with DATABASE_URL"));
            }
            (None, Some(_), Mode::Embedded) => {
                return Err(ConfigError::new("DATABASE_URL", "must be set together with REDIS_URL"));
            }
            (None, None, Mode::Embedded) => Backend::Embedded { data_dir: data_dir.clone() },
        };
        let secret_or_generated = |variable: &str, file: &str| match (env.secret(variable), mode) {
            (Some(secret), _) => checked_secret(variable, secret),
            (None, Mode::Distributed) => {
                Err(ConfigError::new(variable, "is required when the auth service runs alone"))
            }
            (None, Mode::Embedded) => load_or_create_secret(&data_dir, file),
        };
        let secret = secret_or_generated("JWT_SECRET", JWT_SECRET_FILE)?;
        let service_secret = secret_or_generated("SERVICE_SECRET", SERVICE_SECRET_FILE)?;
        let context_signing_secret = secret_or_generated("CONTEXT_SIGNING_SECRET", CONTEXT_SECRET_FILE)?;
        // Embedded, a rotation's previous secrets are kept under `DATA_DIR` unless the
        // variable names them.
        let previous_or_kept = |variable: &str, file: &str| match (env.string(variable), mode) {
            (None, Mode::Embedded) => crate::rotation::kept_previous(&data_dir, file),
            _ => platform::config::previous_secrets(env, variable),
        };
        let previous_secrets = previous_or_kept("JWT_PREVIOUS_SECRETS", JWT_SECRET_FILE)?;
        let service_previous_secrets = previous_or_kept("SERVICE_PREVIOUS_SECRETS", SERVICE_SECRET_FILE)?;
        let context_signing_previous_secrets = match mode {
            Mode::Embedded => previous_or_kept("CONTEXT_SIGNING_PREVIOUS_SECRETS", CONTEXT_SECRET_FILE)?,
            Mode::Distributed => Vec::new(),
        };
        let lifetimes = TokenLifetimes::from_env(env)?;
        let refresh_ttl = at_least_a_second(env, "JWT_REFRESH_EXPIRES_IN", Duration::from_secs(7 * 86_400))?;
        let timeout_minutes: u64 = env.parsed_or("SESSION_TIMEOUT_MINUTES", 30)?;
        let lifetime_hours: u64 = env.parsed_or("SESSION_LIFETIME_HOURS", 168)?;
        if timeout_minutes == 0 {
            return Err(ConfigError::new("SESSION_TIMEOUT_MINUTES", "must be at least 1"));
        }
        if lifetime_hours == 0 {
            return Err(ConfigError::new("SESSION_LIFETIME_HOURS", "must be at least 1"));
        }
        let max_sessions_per_user: u32 = env.parsed_or("MAX_SESSIONS_PER_USER", 5)?;
        if max_sessions_per_user == 0 {
            return Err(ConfigError::new("MAX_SESSIONS_PER_USER", "must be at least 1"));
        }
        let password_min_length: usize = env.parsed_or("PASSWORD_MIN_LENGTH", 8)?;
        if !(8..=crate::domain::password::MAX_PASSWORD_CHARS).contains(&password_min_length) {
            return Err(ConfigError::new("PASSWORD_MIN_LENGTH", "must be between 8 and 256"));
        }
        let password_hash_concurrency: usize =
            env.parsed_or("PASSWORD_HASH_CONCURRENCY", default_hash_concurrency())?;
        if password_hash_concurrency == 0 {
            return Err(ConfigError::new("PASSWORD_HASH_CONCURRENCY", "must be at least 1"));
        }
        let password_hash_queue: usize =
            env.parsed_or("PASSWORD_HASH_QUEUE", password_hash_concurrency.saturating_mul(4))?;
        let log_json = platform::config::log_json(env, mode == Mode::Distributed)?;
        Ok(Self {
            mode,
            host: env.parsed_or("HOST", default_host.parse().map_err(|e| ConfigError::new("HOST", e))?)?,
            port: env.parsed_or(port_var, 4001)?,
            backend,
            jwt: JwtConfig {
                secret,
                previous_secrets,
                issuer: env.string_or("JWT_ISSUER", "portcullis"),
                audience: env.string_or("JWT_AUDIENCE", "portcullis"),
                access_ttl: lifetimes.access,
                refresh_ttl,
            },
            session_idle_timeout: Duration::from_secs(timeout_minutes.saturating_mul(60)),
            session_lifetime: Duration::from_secs(lifetime_hours.saturating_mul(3600)),
            max_sessions_per_user,
            refresh_reuse_grace: Duration::from_secs(env.parsed_or("REFRESH_REUSE_GRACE_SECONDS", 10)?),
            password_min_length,
            password_hash_concurrency,
            password_hash_queue,
            tenant_rate_limit_max: platform::rate::RateLimit::from_env(env, "TENANT_RATE_LIMIT_MAX")?,
            auth_failure_limit: platform::counters::FailureGuard::limit_from_env(env)?,
            trusted_proxies: TrustedProxies::parse("TRUSTED_PROXIES", env.string("TRUSTED_PROXIES").as_deref())?,
            cleanup_interval: env.duration_or("CLEANUP_INTERVAL", Duration::from_secs(3600))?,
            body_limit: 1024 * 1024,
            log_json,
            listener: platform::serve::ListenerLimits::from_env(env, 1)?,
            redis_key_prefix: env.string_or("REDIS_KEY_PREFIX", "portcullis:"),
            ip_allowlist_enabled: env.bool_or("IP_WHITELIST_ENABLED", true)?,
            origin_validation_enabled: env.bool_or("ORIGIN_VALIDATION_ENABLED", true)?,
            pat_max_per_user: env.parsed_or("PAT_MAX_PER_USER", 50)?,
            sdk_token_ttl: lifetimes.sdk,
            service_secret,
            service_previous_secrets,
            context_signing_previous_secrets,
            service_token_ttl: env.duration_or("SERVICE_TOKEN_EXPIRES_IN", Duration::from_secs(10 * 60))?,
            context_signing_secret,
            grpc_port: env.parsed_or(grpc_port_var, 50051)?,
            internal_loopback_only: env.bool_or("INTERNAL_LOOPBACK_ONLY", false)?,
            legacy_pat_accept_until: legacy_pat_accept_until(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use platform::env::MapEnv;

    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    fn distributed(pairs: &[(&str, &str)]) -> Result<AuthConfig, ConfigError> {
        let mut env = MapEnv::new([
            ("DATABASE_URL", "postgres://x"),
            ("REDIS_URL", "redis://x"),
            ("JWT_SECRET", GOOD),
            ("SERVICE_SECRET", GOOD),
            ("CONTEXT_SIGNING_SECRET", GOOD),
        ]);
        for (k, v) in pairs {
            env.set(*k, *v);
        }
        AuthConfig::from_env(&env, Mode::Distributed)
    }

    #[test]
    fn the_table_declares_every_variable_read_and_its_defaults() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data_dir = dir.path().to_string_lossy().to_string();
        let problems = platform::env::check_table(
            &VARIABLES,
            |mode| match mode {
                Mode::Distributed => MapEnv::new([
                    ("DATABASE_URL", "postgres://x"),
                    ("REDIS_URL", "redis://x"),
                    ("JWT_SECRET", GOOD),
                    ("SERVICE_SECRET", GOOD),
                    ("CONTEXT_SIGNING_SECRET", GOOD),
                ]),
                Mode::Embedded => MapEnv::new([("DATA_DIR", data_dir.as_str())]),
            },
            AuthConfig::from_env,
        );
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn secrets_may_come_from_files_but_not_both_ways() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("jwt");
        std::fs::write(&file, format!("{GOOD}-from-a-file\n")).unwrap_or_else(|e| panic!("{e}"));
        let path = file.to_string_lossy().to_string();
        let mut env = MapEnv::new([
            ("DATABASE_URL", "postgres://x"),
            ("REDIS_URL", "redis://x"),
            ("JWT_SECRET_FILE", path.as_str()),
            ("SERVICE_SECRET", GOOD),
            ("CONTEXT_SIGNING_SECRET", GOOD),
        ]);
        let config = AuthConfig::from_env(&env, Mode::Distributed).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.jwt.secret.expose_secret(), format!("{GOOD}-from-a-file"), "the newline is trimmed");
        env.set("JWT_SECRET", GOOD);
        let both = AuthConfig::from_env(&env, Mode::Distributed).unwrap_err();
        assert_eq!(both.variable, "JWT_SECRET");
        assert!(both.message.contains("JWT_SECRET_FILE"), "{both}");
        env.0.remove("JWT_SECRET");
        env.set("JWT_SECRET_FILE", dir.path().join("missing").to_string_lossy().to_string());
        assert_eq!(AuthConfig::from_env(&env, Mode::Distributed).unwrap_err().variable, "JWT_SECRET_FILE");
        std::fs::write(&file, "\n").unwrap_or_else(|e| panic!("{e}"));
        env.set("JWT_SECRET_FILE", path.as_str());
        assert_eq!(AuthConfig::from_env(&env, Mode::Distributed).unwrap_err().variable, "JWT_SECRET_FILE");
        env.set("DATABASE_URL_FILE", path.as_str());
        env.0.remove("JWT_SECRET_FILE");
        env.set("JWT_SECRET", GOOD);
        assert_eq!(AuthConfig::from_env(&env, Mode::Distributed).unwrap_err().variable, "DATABASE_URL");
    }

    #[test]
    fn distributed_mode_requires_a_strong_secret() {
        assert_eq!(distributed(&[("JWT_SECRET", "")]).unwrap_err().variable, "JWT_SECRET");
        assert_eq!(distributed(&[("JWT_SECRET", "too-short")]).unwrap_err().variable, "JWT_SECRET");
        assert_eq!(distributed(&[("SERVICE_SECRET", "short")]).unwrap_err().variable, "SERVICE_SECRET");
        assert_eq!(distributed(&[("CONTEXT_SIGNING_SECRET", "")]).unwrap_err().variable, "CONTEXT_SIGNING_SECRET");
        assert!(distributed(&[]).is_ok());
    }

    #[test]
    fn start_up_warnings_name_what_to_fix() {
        let warnings = distributed(&[]).unwrap().warnings();
        assert!(warnings.iter().any(|w| w.starts_with("TRUSTED_PROXIES is empty")), "{warnings:?}");
        assert_eq!(warnings.iter().filter(|w| w.contains("are equal")).count(), 3, "{warnings:?}");
        let other = "another-secret-of-at-least-32-bytes-0123456789";
        let third = "a-third-secret-of-at-least-32-bytes-0123456789";
        let clean = distributed(&[
            ("TRUSTED_PROXIES", "172.28.0.10"),
            ("SERVICE_SECRET", other),
            ("CONTEXT_SIGNING_SECRET", third),
        ])
        .unwrap();
        assert_eq!(clean.warnings(), Vec::<String>::new());
    }

    #[test]
    fn distributed_mode_requires_redis_and_postgres() {
        let env = MapEnv::new([("DATABASE_URL", "postgres://x"), ("JWT_SECRET", GOOD)]);
        assert_eq!(AuthConfig::from_env(&env, Mode::Distributed).unwrap_err().variable, "REDIS_URL");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("JWT_EXPIRES_IN", "15"),
            ("SESSION_TIMEOUT_MINUTES", "soon"),
            ("MAX_SESSIONS_PER_USER", "0"),
            ("TRUSTED_PROXIES", "nope"),
            ("PASSWORD_MIN_LENGTH", "4"),
            ("JWT_PREVIOUS_SECRETS", "short"),
            ("LOG_FORMAT", "xml"),
            ("IP_WHITELIST_ENABLED", "sometimes"),
            ("SDK_TOKEN_EXPIRES_IN", "15"),
            ("LEGACY_PAT_ACCEPT_UNTIL", "2026-03-31"),
            ("LEGACY_PAT_ACCEPT_UNTIL", "2026-03-31T00:00:00"),
            ("LEGACY_PAT_ACCEPT_UNTIL", "next spring"),
        ] {
            assert_eq!(distributed(&[(var, value)]).unwrap_err().variable, var);
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = distributed(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.jwt.access_ttl, Duration::from_secs(900));
        assert_eq!(c.jwt.refresh_ttl, Duration::from_secs(604_800));
        assert_eq!(c.session_idle_timeout, Duration::from_secs(1800));
        assert_eq!(c.session_lifetime, Duration::from_secs(168 * 3600));
        assert_eq!(c.max_sessions_per_user, 5);
        assert_eq!(c.refresh_reuse_grace, Duration::from_secs(10));
        assert_eq!(c.port, 4001);
        assert_eq!(c.jwt.issuer, "portcullis");
        assert_eq!(c.legacy_pat_accept_until, None, "legacy tokens are never accepted unless asked for");
    }

    #[test]
    fn the_legacy_cutoff_is_an_instant() {
        let c = distributed(&[("LEGACY_PAT_ACCEPT_UNTIL", "2026-03-31T02:00:00+02:00")]).unwrap();
        assert_eq!(c.legacy_pat_accept_until, Some(time::macros::datetime!(2026-03-31 00:00:00 UTC)));
        assert_eq!(distributed(&[("LEGACY_PAT_ACCEPT_UNTIL", " ")]).unwrap().legacy_pat_accept_until, None);
    }

    #[test]
    fn embedded_mode_generates_and_keeps_a_secret() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let env = MapEnv::new([("DATA_DIR", dir.path().to_string_lossy().to_string())]);
        let first = AuthConfig::from_env(&env, Mode::Embedded).unwrap_or_else(|e| panic!("{e}"));
        let second = AuthConfig::from_env(&env, Mode::Embedded).unwrap_or_else(|e| panic!("{e}"));
        assert!(first.jwt.secret.expose_secret().len() >= platform::config::MIN_SECRET_BYTES);
        assert_eq!(first.jwt.secret.expose_secret(), second.jwt.secret.expose_secret());
        assert_eq!(first.host.to_string(), "127.0.0.1");
    }
}
