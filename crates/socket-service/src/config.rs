//! The socket service's typed configuration, read once from the environment (SPEC §8) and
//! validated at start-up; a bad value stops the process naming the variable.

use std::{net::IpAddr, time::Duration};

use platform::{
    env::{ConfigError, Env, EnvExt, Fallback, Var, Variables},
    net::TrustedProxies,
    origin::Origin,
};
use secrecy::SecretString;

pub use platform::config::{Mode, SecretOverrides};
pub const DEFAULT_PORT: u16 = 4004;
pub const DEFAULT_AUTH_SERVICE_URL: &str = "http://127.0.0.1:50051";
pub const DEFAULT_MESSAGES_PER_MINUTE: u32 = 120;
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
pub const DEFAULT_RECHECK_INTERVAL: Duration = Duration::from_secs(30);
/// SPEC §7: every connection is re-checked at least once a minute.
pub const MAX_RECHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Every variable the socket service reads (SPEC §8), in `docs/configuration.md` by a test.
pub static VARIABLES: Variables = Variables {
    binary: "socket-service",
    groups: &[SOCKET_VARIABLES, platform::config::AUTH_CLIENT_VARIABLES, platform::config::COMMON_VARIABLES],
};

const SOCKET_VARIABLES: &[Var] = &[
    Var::new("PORT", Fallback::Value("4004"), "HTTP port; `0` picks a free one").only(Mode::Distributed),
    Var::new("SOCKET_PORT", Fallback::Value("4004"), "the socket service's HTTP port; `0` picks a free one")
        .only(Mode::Embedded),
    Var::new(
        "REDIS_URL",
        Fallback::Required { embedded: "unset: in-process contexts, tickets and bus" },
        "connection contexts, tickets and the bus",
    )
    .secret(),
    Var::new(
        "SOCKET_ALLOWED_ORIGINS",
        Fallback::Unset,
        "comma-separated exact origins for user, PAT and service credentials (SDK tokens and API keys use their tenant's)",
    ),
    Var::new(
        "CONTEXT_SIGNING_PREVIOUS_SECRETS",
        Fallback::Unset,
        "comma-separated older context secrets whose signatures `POST /ticket` still accepts (rotation)",
    )
    .secret(),
    Var::new("SOCKET_MESSAGES_PER_MINUTE", Fallback::Value("120"), "messages one connection may send per minute; ≥ 1"),
    Var::new(
        "SOCKET_HEARTBEAT_INTERVAL",
        Fallback::Value("30s"),
        "server ping and stored-context TTL refresh; a peer silent for two intervals is closed with 4408; ≥ 100 ms",
    ),
    Var::new(
        "SOCKET_RECHECK_INTERVAL",
        Fallback::Value("30s"),
        "how often every open connection's context is re-checked (`CheckContext`); 100 ms to 60 s",
    ),
    Var::new(
        "SOCKET_SEND_TIMEOUT",
        Fallback::Value("10s"),
        "a frame the peer has not taken within this drops the connection; ≥ 10 ms",
    ),
];

#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub mode: Mode,
    /// `HOST`.
    pub host: IpAddr,
    /// `PORT` (`SOCKET_PORT` in the all-in-one binary); 0 picks a free port.
    pub port: u16,
    /// `AUTH_SERVICE_URL`: the auth service's gRPC address.
    pub auth_service_url: String,
    /// `SERVICE_SECRET`: what this service proves to obtain its service token.
    pub service_secret: SecretString,
    /// `CONTEXT_SIGNING_SECRET`: verifies the gateway's context headers on `POST /ticket`.
    pub context_signing_secret: SecretString,
    /// `CONTEXT_SIGNING_PREVIOUS_SECRETS`: older context secrets still accepted (rotation).
    pub context_signing_previous_secrets: Vec<SecretString>,
    /// `REDIS_URL`: connection contexts, tickets and the bus; `None` only in embedded mode.
    pub redis_url: Option<SecretString>,
    /// `REDIS_KEY_PREFIX`: prefix of every Redis key and of this service's own bus channel.
    pub redis_key_prefix: String,
    /// `SOCKET_ALLOWED_ORIGINS`: browser origins allowed for user, PAT and service
    /// credentials (SDK tokens and API keys use their tenant's origins instead).
    pub allowed_origins: Vec<Origin>,
    /// `SOCKET_MESSAGES_PER_MINUTE`: messages one connection may send per minute.
    pub messages_per_minute: u32,
    /// `SOCKET_HEARTBEAT_INTERVAL`: how often the server pings and refreshes the stored
    /// context's TTL; a peer silent for two intervals is closed with 4408.
    pub heartbeat: Duration,
    /// `AUTH_FAILURE_LIMIT` (default `60/minute`): failed handshakes per client IP, counted
    /// before each credential is validated.
    pub auth_failure_limit: platform::rate::RateLimit,
    /// `SOCKET_SEND_TIMEOUT`: how long one frame may wait for a peer that does not read
    /// before the connection is dropped.
    pub send_timeout: Duration,
    /// `SOCKET_RECHECK_INTERVAL`: how often every open connection's context is re-checked
    /// with the auth service (`CheckContext`); at most a minute.
    pub recheck_interval: Duration,
    /// `TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// `LOG_FORMAT`: `json` or `text`.
    pub log_json: bool,
    /// `HTTP_HEADER_READ_TIMEOUT` and `HTTP_MAX_CONNECTIONS` of the HTTP listener.
    pub listener: platform::serve::ListenerLimits,
}

fn secret(
    env: &dyn Env,
    mode: Mode,
    variable: &str,
    override_value: Option<SecretString>,
) -> Result<SecretString, ConfigError> {
    platform::config::shared_secret(env, variable, "socket service", mode == Mode::Distributed, override_value)
}

fn auth_service_url(env: &dyn Env, mode: Mode) -> Result<String, ConfigError> {
    let raw = match (env.string("AUTH_SERVICE_URL"), mode) {
        (Some(raw), _) => raw,
        (None, Mode::Embedded) => DEFAULT_AUTH_SERVICE_URL.to_owned(),
        (None, Mode::Distributed) => {
            return Err(ConfigError::new("AUTH_SERVICE_URL", "is required when the socket service runs alone"));
        }
    };
    let valid = raw.split_once("://").is_some_and(|(scheme, rest)| {
        matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") && !rest.is_empty()
    });
    if !valid {
        return Err(ConfigError::new("AUTH_SERVICE_URL", format!("`{raw}` is not an http:// or https:// address")));
    }
    Ok(raw)
}

fn redis_url(env: &dyn Env, mode: Mode) -> Result<Option<SecretString>, ConfigError> {
    let why = "the socket service runs alone: revocation events and connection contexts are shared through it";
    platform::config::redis_url(env, (mode == Mode::Distributed).then_some(why))
}

impl SocketConfig {
    /// Reads the configuration with secrets from the environment only.
    pub fn from_env(env: &dyn Env, mode: Mode) -> Result<Self, ConfigError> {
        Self::from_env_with(env, mode, SecretOverrides::default())
    }

    /// Reads the configuration, taking secrets from `overrides` where given.
    pub fn from_env_with(env: &dyn Env, mode: Mode, overrides: SecretOverrides) -> Result<Self, ConfigError> {
        let env = &VARIABLES.scope(env)?;
        let (port_var, default_host) = match mode {
            Mode::Embedded => ("SOCKET_PORT", "127.0.0.1"),
            Mode::Distributed => ("PORT", "0.0.0.0"),
        };
        let host = env.parsed_or("HOST", default_host.parse().map_err(|e| ConfigError::new("HOST", e))?)?;
        let port = env.parsed_or(port_var, DEFAULT_PORT)?;
        let messages_per_minute = env.parsed_or("SOCKET_MESSAGES_PER_MINUTE", DEFAULT_MESSAGES_PER_MINUTE)?;
        if messages_per_minute == 0 {
            return Err(ConfigError::new("SOCKET_MESSAGES_PER_MINUTE", "must be at least 1"));
        }
        let heartbeat = env.duration_or("SOCKET_HEARTBEAT_INTERVAL", DEFAULT_HEARTBEAT)?;
        if heartbeat < Duration::from_millis(100) {
            return Err(ConfigError::new("SOCKET_HEARTBEAT_INTERVAL", "must be at least 100ms"));
        }
        let log_json = platform::config::log_json(env, mode == Mode::Distributed)?;
        Ok(Self {
            mode,
            host,
            port,
            auth_service_url: auth_service_url(env, mode)?,
            service_secret: secret(env, mode, "SERVICE_SECRET", overrides.service_secret)?,
            context_signing_secret: secret(env, mode, "CONTEXT_SIGNING_SECRET", overrides.context_signing_secret)?,
            context_signing_previous_secrets: platform::config::previous_secrets(
                env,
                "CONTEXT_SIGNING_PREVIOUS_SECRETS",
            )?,
            redis_url: redis_url(env, mode)?,
            redis_key_prefix: env.string_or("REDIS_KEY_PREFIX", "portcullis:"),
            allowed_origins: platform::config::origin_list(env, "SOCKET_ALLOWED_ORIGINS")?,
            messages_per_minute,
            heartbeat,
            auth_failure_limit: platform::counters::FailureGuard::limit_from_env(env)?,
            send_timeout: {
                let timeout = env.duration_or("SOCKET_SEND_TIMEOUT", DEFAULT_SEND_TIMEOUT)?;
                if timeout < Duration::from_millis(10) {
                    return Err(ConfigError::new("SOCKET_SEND_TIMEOUT", "must be at least 10ms"));
                }
                timeout
            },
            recheck_interval: {
                let every = env.duration_or("SOCKET_RECHECK_INTERVAL", DEFAULT_RECHECK_INTERVAL)?;
                if !(Duration::from_millis(100)..=MAX_RECHECK_INTERVAL).contains(&every) {
                    return Err(ConfigError::new("SOCKET_RECHECK_INTERVAL", "must be from 100ms to 60s"));
                }
                every
            },
            trusted_proxies: TrustedProxies::parse("TRUSTED_PROXIES", env.string("TRUSTED_PROXIES").as_deref())?,
            log_json,
            listener: platform::serve::ListenerLimits::from_env(env, 1)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use std::net::Ipv4Addr;

    use platform::env::MapEnv;

    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";
    const OTHER: &str = "fedcba9876543210fedcba9876543210";

    fn distributed(pairs: &[(&str, &str)]) -> Result<SocketConfig, ConfigError> {
        let mut env = MapEnv::new([
            ("AUTH_SERVICE_URL", "http://auth:50051"),
            ("SERVICE_SECRET", GOOD),
            ("CONTEXT_SIGNING_SECRET", OTHER),
            ("REDIS_URL", "redis://redis:6379"),
        ]);
        for (k, v) in pairs {
            env.set(*k, *v);
        }
        SocketConfig::from_env(&env, Mode::Distributed)
    }

    fn embedded(pairs: &[(&str, &str)]) -> Result<SocketConfig, ConfigError> {
        let overrides = SecretOverrides {
            service_secret: Some(SecretString::from(GOOD)),
            context_signing_secret: Some(SecretString::from(OTHER)),
        };
        SocketConfig::from_env_with(&MapEnv::new(pairs.iter().copied()), Mode::Embedded, overrides)
    }

    #[test]
    fn the_table_declares_every_variable_read_and_its_defaults() {
        let base = MapEnv::new([
            ("AUTH_SERVICE_URL", "http://auth:50051"),
            ("SERVICE_SECRET", GOOD),
            ("CONTEXT_SIGNING_SECRET", OTHER),
            ("REDIS_URL", "redis://redis:6379"),
        ]);
        let problems = platform::env::check_table(
            &VARIABLES,
            |mode| if mode == Mode::Distributed { base.clone() } else { MapEnv::default() },
            |env, mode| {
                let overrides = match mode {
                    Mode::Distributed => SecretOverrides::default(),
                    Mode::Embedded => SecretOverrides {
                        service_secret: Some(SecretString::from(GOOD)),
                        context_signing_secret: Some(SecretString::from(OTHER)),
                    },
                };
                SocketConfig::from_env_with(env, mode, overrides)
            },
        );
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn distributed_defaults() {
        let c = distributed(&[]).unwrap();
        assert_eq!(c.port, 4004);
        assert_eq!(c.host, IpAddr::from(Ipv4Addr::UNSPECIFIED));
        assert_eq!(c.messages_per_minute, 120);
        assert_eq!(c.redis_key_prefix, "portcullis:");
        assert!(c.allowed_origins.is_empty());
        assert!(c.log_json);
        assert_eq!(c.heartbeat, Duration::from_secs(30));
    }

    #[test]
    fn distributed_mode_requires_auth_url_secrets_and_redis() {
        for var in ["AUTH_SERVICE_URL", "SERVICE_SECRET", "CONTEXT_SIGNING_SECRET", "REDIS_URL"] {
            let err = distributed(&[(var, "")]).unwrap_err();
            assert_eq!(err.variable, var);
        }
    }

    #[test]
    fn weak_secrets_are_refused_by_name() {
        for var in ["SERVICE_SECRET", "CONTEXT_SIGNING_SECRET"] {
            let err = distributed(&[(var, "short")]).unwrap_err();
            assert_eq!(err.variable, var);
            assert!(err.message.contains("32"), "{err}");
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("PORT", "http"),
            ("HOST", "nowhere"),
            ("SOCKET_MESSAGES_PER_MINUTE", "0"),
            ("SOCKET_MESSAGES_PER_MINUTE", "lots"),
            ("SOCKET_ALLOWED_ORIGINS", "https://ok.example,not an origin"),
            ("SOCKET_HEARTBEAT_INTERVAL", "30"),
            ("TRUSTED_PROXIES", "10.0.0.0/8,nope"),
            ("LOG_FORMAT", "xml"),
            ("AUTH_SERVICE_URL", "auth:50051"),
            ("REDIS_URL", "http://redis"),
        ] {
            let err = distributed(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var, "{var}={value}");
        }
    }

    #[test]
    fn embedded_mode_uses_local_defaults_and_overrides() {
        let c = embedded(&[("SOCKET_PORT", "0"), ("PORT", "9999")]).unwrap();
        assert_eq!(c.port, 0, "embedded mode reads SOCKET_PORT, not PORT");
        assert_eq!(c.host, IpAddr::from(Ipv4Addr::LOCALHOST));
        assert_eq!(c.auth_service_url, DEFAULT_AUTH_SERVICE_URL);
        assert!(c.redis_url.is_none());
        assert_eq!(c.service_secret.expose_secret(), GOOD);
        assert!(!c.log_json);
        let err = SocketConfig::from_env(&MapEnv::default(), Mode::Embedded).unwrap_err();
        assert_eq!(err.variable, "SERVICE_SECRET");
    }

    #[test]
    fn origins_are_parsed_canonical_and_deduplicated() {
        let c = distributed(&[
            ("SOCKET_ALLOWED_ORIGINS", "https://App.example.com:443, https://app.example.com,http://localhost:3000"),
            ("SOCKET_MESSAGES_PER_MINUTE", "30"),
        ])
        .unwrap();
        let origins: Vec<&str> = c.allowed_origins.iter().map(Origin::as_str).collect();
        assert_eq!(origins, ["https://app.example.com", "http://localhost:3000"]);
        assert_eq!(c.messages_per_minute, 30);
    }
}
