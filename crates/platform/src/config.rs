//! Configuration rules every service applies the same way: how long a secret must be, how a
//! secret shared with the auth service is obtained, `LOG_FORMAT` and `REDIS_URL`.

use secrecy::{ExposeSecret, SecretString};

use crate::{
    env::{ConfigError, Env, EnvExt, Fallback, Var},
    origin::Origin,
};

/// The variables every service reads alike, part of each service's table.
pub const COMMON_VARIABLES: &[Var] = &[
    Var::new("HOST", Fallback::PerMode { distributed: "0.0.0.0", embedded: "127.0.0.1" }, "listen address"),
    Var::new(
        "LOG_FORMAT",
        Fallback::PerMode { distributed: "json", embedded: "text" },
        "log lines as `json` or `text`; lines are buffered and written every 100 ms, at 64 KiB, at once for a warning or error, and on exit (a process killed outright loses at most the last 100 ms)",
    ),
    Var::new(
        "TRUSTED_PROXIES",
        Fallback::Unset,
        "CIDRs or addresses whose `X-Forwarded-For` is believed (every line of the header is read, as one list); a service alone behind the gateway warns when it is empty",
    ),
    Var::new(
        "REDIS_KEY_PREFIX",
        Fallback::Value("portcullis:"),
        "prefix of every Redis key written (and of the socket service's own bus channel)",
    ),
    Var::new(
        "AUTH_FAILURE_LIMIT",
        Fallback::Value("60/minute"),
        "invalid credentials per client IP (IPv6 by its /64): a credential reserves one before it is validated and gives it back when valid (at the gateway, one the contract cache already allows takes none); past the limit, 429 `rate_limited` before any lookup",
    ),
    Var::new(
        "HTTP_HEADER_READ_TIMEOUT",
        Fallback::Value("10s"),
        "how long a client has to send a request head, counted from the connection's opening or the previous response, so it also closes idle keep-alive connections (not upgraded WebSockets)",
    ),
    Var::new(
        "HTTP_MAX_CONNECTIONS",
        Fallback::Described("(`RLIMIT_NOFILE` − 256) per listener, halved for the gateway"),
        "connections held at once, upgraded ones included; past it new connections wait in the kernel's backlog",
    ),
];

/// What the gateway and the socket service need to reach the auth service: its address and
/// the secrets they share with it.
pub const AUTH_CLIENT_VARIABLES: &[Var] = &[
    Var::new(
        "AUTH_SERVICE_URL",
        Fallback::Required { embedded: "the auth service's bound address" },
        "the auth service's gRPC address",
    ),
    Var::new(
        "SERVICE_SECRET",
        Fallback::Required { embedded: "the auth service's" },
        "the auth service's `SERVICE_SECRET`, proved to obtain a service token",
    )
    .secret(),
    Var::new(
        "CONTEXT_SIGNING_SECRET",
        Fallback::Required { embedded: "the auth service's" },
        "the auth service's `CONTEXT_SIGNING_SECRET`: signs (gateway) or verifies (socket service) the context headers",
    )
    .secret(),
];

/// How a service is deployed, which decides its defaults and what is mandatory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Inside the all-in-one binary: loopback addresses, local defaults for the other
    /// services, in-process state unless `DATABASE_URL`/`REDIS_URL` say otherwise, secrets
    /// generated under `DATA_DIR` or handed in by the binary.
    Embedded,
    /// The service's own binary: every address, secret and shared store it needs is
    /// required, and a missing one stops it naming the variable.
    Distributed,
}

/// Secrets handed in by the caller rather than read from the environment. The all-in-one
/// binary passes the ones the auth service resolved (perhaps generated under `DATA_DIR`), so
/// every service holds the same value. A handed-in value wins over the variable.
#[derive(Debug, Clone, Default)]
pub struct SecretOverrides {
    pub service_secret: Option<SecretString>,
    pub context_signing_secret: Option<SecretString>,
}

/// Shortest accepted secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Refuses a secret shorter than [`MIN_SECRET_BYTES`], naming `variable`.
pub fn checked_secret(variable: &str, secret: SecretString) -> Result<SecretString, ConfigError> {
    if secret.expose_secret().len() < MIN_SECRET_BYTES {
        return Err(ConfigError::new(
            variable,
            format!("must be at least {MIN_SECRET_BYTES} bytes (generate one with `openssl rand -base64 48`)"),
        ));
    }
    Ok(secret)
}

/// A secret the auth service owns (`SERVICE_SECRET`, `CONTEXT_SIGNING_SECRET`): handed in by
/// the all-in-one binary (which wins), else the variable; `service` runs `alone` in
/// distributed mode, where the variable is required.
pub fn shared_secret(
    env: &dyn Env,
    variable: &str,
    service: &str,
    alone: bool,
    handed_in: Option<SecretString>,
) -> Result<SecretString, ConfigError> {
    match handed_in.or_else(|| env.secret(variable)) {
        Some(value) => checked_secret(variable, value),
        None if alone => Err(ConfigError::new(
            variable,
            format!(
                "is required when the {service} runs alone (the auth service's value, at least {MIN_SECRET_BYTES} bytes)"
            ),
        )),
        None => Err(ConfigError::new(variable, "is not set and was not passed in by the all-in-one binary")),
    }
}

/// A comma-separated list of older secrets a rotation still accepts (`JWT_PREVIOUS_SECRETS`,
/// `SERVICE_PREVIOUS_SECRETS`, `CONTEXT_SIGNING_PREVIOUS_SECRETS`), each as long as a secret
/// must be.
pub fn previous_secrets(env: &dyn Env, variable: &str) -> Result<Vec<SecretString>, ConfigError> {
    env.string(variable)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| checked_secret(variable, SecretString::from(s.to_owned())))
        .collect()
}

/// `LOG_FORMAT`: `json` or `text` (`pretty`), else `default_json`.
pub fn log_json(env: &dyn Env, default_json: bool) -> Result<bool, ConfigError> {
    match env.string("LOG_FORMAT").map(|v| v.to_ascii_lowercase()).as_deref() {
        None => Ok(default_json),
        Some("json") => Ok(true),
        Some("text" | "pretty") => Ok(false),
        Some(other) => Err(ConfigError::new("LOG_FORMAT", format!("`{other}` is not json or text"))),
    }
}

/// `REDIS_URL`, checked for its scheme only (the client parses the rest; the value is never
/// echoed, since it may hold a password). `required` says why a service alone needs it.
pub fn redis_url(env: &dyn Env, required: Option<&str>) -> Result<Option<SecretString>, ConfigError> {
    let Some(url) = env.secret("REDIS_URL") else {
        return match required {
            None => Ok(None),
            Some(why) => Err(ConfigError::new("REDIS_URL", format!("is required when {why}"))),
        };
    };
    let scheme = url.expose_secret().split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("redis" | "rediss" | "redis+unix" | "unix") => Ok(Some(url)),
        _ => Err(ConfigError::new("REDIS_URL", "must be a redis://, rediss:// or unix:// URL")),
    }
}

/// A comma-separated list of origins (`CORS_ORIGIN`, `SOCKET_ALLOWED_ORIGINS`), canonical and
/// without duplicates.
pub fn origin_list(env: &dyn Env, variable: &str) -> Result<Vec<Origin>, ConfigError> {
    let mut origins: Vec<Origin> = Vec::new();
    for item in env.string(variable).unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let origin = Origin::parse(item).map_err(|e| ConfigError::new(variable, e))?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    #[test]
    fn shared_secrets_prefer_the_handed_in_value_and_name_their_variable() {
        let env = MapEnv::new([("S", "short")]);
        let long = SecretString::from("x".repeat(32));
        assert!(shared_secret(&env, "S", "gateway", true, Some(long)).is_ok());
        assert_eq!(shared_secret(&env, "S", "gateway", true, None).unwrap_err().variable, "S");
        let missing = shared_secret(&MapEnv::default(), "S", "gateway", true, None).unwrap_err();
        assert!(missing.to_string().contains("runs alone"), "{missing}");
    }

    #[test]
    fn log_format_and_redis_url() {
        assert!(log_json(&MapEnv::new([("LOG_FORMAT", "JSON")]), false).unwrap());
        assert!(!log_json(&MapEnv::default(), false).unwrap());
        assert!(log_json(&MapEnv::new([("LOG_FORMAT", "xml")]), false).is_err());
        assert!(redis_url(&MapEnv::default(), None).unwrap().is_none());
        assert!(redis_url(&MapEnv::default(), Some("alone")).is_err());
        assert!(redis_url(&MapEnv::new([("REDIS_URL", "http://x")]), None).is_err());
        assert!(redis_url(&MapEnv::new([("REDIS_URL", "redis://x:6379")]), None).unwrap().is_some());
    }
}
