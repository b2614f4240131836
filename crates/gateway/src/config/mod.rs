//! The gateway's typed configuration, read once from the environment (SPEC §8) and validated
//! at start-up together with the routes file; a bad value stops the process naming the
//! variable.

pub mod routes;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use platform::{
    env::{ConfigError, Env, EnvExt, Fallback, Var, Variables},
    net::TrustedProxies,
};
use secrecy::SecretString;

use self::routes::RoutesFile;
use crate::{
    domain::{LimitMode, Origin, RateLimit, Upstream},
    webhooks::amqp::{AmqpSettings, DEFAULT_MAX_LENGTH, DEFAULT_QUEUE_PREFIX},
};

pub use platform::config::{Mode, SecretOverrides};
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_AUTH_SERVICE_URL: &str = "http://127.0.0.1:50051";
pub const DEFAULT_AUTH_HTTP_URL: &str = "http://127.0.0.1:4001";
pub const DEFAULT_SOCKET_SERVICE_URL: &str = "http://127.0.0.1:4004";
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "portcullis:";
pub const DEFAULT_DATA_DIR: &str = "./data";

/// Every variable the gateway reads (SPEC §8), in `docs/configuration.md` by a test.
pub static VARIABLES: Variables = Variables {
    binary: "gateway",
    groups: &[GATEWAY_VARIABLES, platform::config::AUTH_CLIENT_VARIABLES, platform::config::COMMON_VARIABLES],
};

const GATEWAY_VARIABLES: &[Var] = &[
    Var::new("PORT", Fallback::Value("8080"), "HTTP port; `0` picks a free one").only(Mode::Distributed),
    Var::new("GATEWAY_PORT", Fallback::Value("8080"), "the gateway's HTTP port; `0` picks a free one")
        .only(Mode::Embedded),
    Var::new(
        "AUTH_HTTP_URL",
        Fallback::Required { embedded: "the auth service's bound address" },
        "the auth service's REST base, for `/v1/auth` and `/v1/client(s)`",
    ),
    Var::new(
        "SOCKET_SERVICE_URL",
        Fallback::Value("http://127.0.0.1:4004"),
        "the socket service, for `/v1/socket` and `/v1/socket/ticket` (the all-in-one binary passes its bound address)",
    ),
    Var::new(
        "REDIS_URL",
        Fallback::Required { embedded: "unset: in-process counters and the webhook spool" },
        "`redis://`, `rediss://` or `unix://`; rate limits, replay guards, events and webhook queues shared by every gateway instance",
    )
    .secret(),
    Var::new(
        "CORS_ORIGIN",
        Fallback::Unset,
        "comma-separated exact origins (`scheme://host[:port]`) allowed for every preflight, on top of each client's own origins",
    ),
    Var::new("IP_WHITELIST_ENABLED", Fallback::Value("true"), "enforce clients' IP allowlists"),
    Var::new("ORIGIN_VALIDATION_ENABLED", Fallback::Value("true"), "enforce clients' allowed origins"),
    Var::new(
        "GATEWAY_CONFIG",
        Fallback::Unset,
        "path of the routes file ([gateway.md](gateway.md)); without one, only the built-in routes are served",
    ),
    Var::new(
        "TOKIO_WORKER_THREADS",
        Fallback::Described("the CPUs"),
        "the standalone gateway serves on this many threads, each a single-threaded runtime with its own upstream pool; the all-in-one binary serves on its shared runtime",
    ),
    Var::new(
        "IP_RATE_LIMIT",
        Fallback::Unset,
        "a limit per client IP (IPv6 by its /64) on every request but webhooks (`600/minute`), counted before authentication",
    ),
    Var::new(
        "RATE_LIMIT_MODE",
        Fallback::Value("exact"),
        "`exact`: every rate-limit check asks Redis; `synced`: local copies reconciled with Redis every 100 ms ([gateway.md](gateway.md))",
    ),
    Var::new(
        "TENANT_RATE_LIMIT_MAX",
        Fallback::Unset,
        "the fastest a tenant's own limit may be; a larger one set earlier is applied as this",
    ),
    Var::new("DATA_DIR", Fallback::Value("./data"), "where webhook events are spooled without Redis or RabbitMQ (`DATA_DIR/webhooks`)"),
    Var::new(
        "AMQP_URL",
        Fallback::Unset,
        "`amqp://user:password@host:port/vhost`: the webhook outbox on RabbitMQ quorum queues instead of Redis or the spool ([webhooks.md](webhooks.md)); `amqps://` is refused",
    )
    .secret(),
    Var::new(
        "AMQP_QUEUE_PREFIX",
        Fallback::Value("portcullis.webhooks."),
        "a source's queue is this prefix and the source name; at most 180 printable characters, not `amq.`",
    ),
    Var::new(
        "AMQP_MAX_LENGTH",
        Fallback::Value("100000"),
        "events one source's queue holds; beyond it a webhook gets 503 with `Retry-After`. Fixed when the queue is first declared",
    ),
];

/// Where the webhook events are stored, read from the environment as the gateway reads it
/// (`REDIS_URL`, `REDIS_KEY_PREFIX`, `DATA_DIR`, `AMQP_*`), for the operator's tools
/// (`cargo xtask webhooks dead …`), which need no secrets.
#[derive(Debug, Clone)]
pub struct WebhookStore {
    pub redis_url: Option<SecretString>,
    pub redis_key_prefix: String,
    pub data_dir: PathBuf,
    pub amqp: Option<AmqpSettings>,
}

impl WebhookStore {
    pub fn from_env(env: &dyn Env) -> Result<Self, ConfigError> {
        let env = &VARIABLES.scope(env)?;
        Ok(Self {
            redis_url: platform::config::redis_url(env, None)?,
            redis_key_prefix: env.string_or("REDIS_KEY_PREFIX", DEFAULT_REDIS_KEY_PREFIX),
            data_dir: PathBuf::from(env.string_or("DATA_DIR", DEFAULT_DATA_DIR)),
            amqp: amqp(env)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub mode: Mode,
    /// `HOST`.
    pub host: IpAddr,
    /// `PORT` (`GATEWAY_PORT` in the all-in-one binary); 0 picks a free port.
    pub port: u16,
    /// `AUTH_SERVICE_URL`: the auth service's gRPC address.
    pub auth_service_url: Upstream,
    /// `AUTH_HTTP_URL`: the auth service's REST base, for `/v1/auth` and `/v1/client(s)`.
    pub auth_http_url: Upstream,
    /// `SOCKET_SERVICE_URL`: the socket service, for `/v1/socket` and `/v1/socket/ticket`.
    pub socket_service_url: Upstream,
    /// `SERVICE_SECRET`: what the gateway proves to obtain a service token.
    pub service_secret: SecretString,
    /// `CONTEXT_SIGNING_SECRET`: signs the context headers sent upstream.
    pub context_signing_secret: SecretString,
    /// `REDIS_URL`: shared rate-limit counters, replay guards and events; `None` only in
    /// embedded mode, which then keeps them in process.
    pub redis_url: Option<SecretString>,
    /// `REDIS_KEY_PREFIX`: prefix of every Redis key the gateway writes.
    pub redis_key_prefix: String,
    /// `TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// `CORS_ORIGIN`: origins allowed for every preflight, on top of every client's origins.
    pub cors_origins: Vec<Origin>,
    /// `IP_WHITELIST_ENABLED`: enforce clients' IP allowlists.
    pub ip_allowlist_enabled: bool,
    /// `ORIGIN_VALIDATION_ENABLED`: enforce clients' allowed origins.
    pub origin_validation_enabled: bool,
    /// `GATEWAY_CONFIG`: where the routes came from; `None` serves only built-in routes.
    pub routes_file: Option<PathBuf>,
    /// The parsed routes file, or the empty one.
    pub routes: RoutesFile,
    /// `LOG_FORMAT`: `json` or `text`.
    pub log_json: bool,
    /// `HTTP_HEADER_READ_TIMEOUT` and `HTTP_MAX_CONNECTIONS` of the HTTP listener.
    pub listener: platform::serve::ListenerLimits,
    /// `TOKIO_WORKER_THREADS` (tokio's own variable; default: the CPUs): the threads the
    /// standalone gateway serves on, each a single-threaded runtime of its own
    /// ([`crate::run_on_threads`]). The all-in-one binary serves on its shared runtime.
    pub edge_threads: usize,
    /// `IP_RATE_LIMIT` (e.g. `600/minute`): a limit per client IP on every request; unset
    /// means none beyond the routes' own.
    pub ip_rate_limit: Option<RateLimit>,
    /// `RATE_LIMIT_MODE` (`exact` or `synced`, default `exact`): whether every rate-limit check
    /// asks Redis, or local copies are reconciled with it every 100 ms.
    pub rate_limit_mode: LimitMode,
    /// `TENANT_RATE_LIMIT_MAX`: the fastest a tenant's own limit may be; a larger one (set
    /// before the maximum was lowered) is applied as the maximum.
    pub tenant_rate_limit_max: Option<RateLimit>,
    /// `AUTH_FAILURE_LIMIT` (default `60/minute`): failed authentications per client IP,
    /// counted before each validation.
    pub auth_failure_limit: RateLimit,
    /// `DATA_DIR`: where embedded mode spools webhook events.
    pub data_dir: PathBuf,
    /// `AMQP_URL` (`amqp://user:password@host:port/vhost`), with `AMQP_QUEUE_PREFIX` and
    /// `AMQP_MAX_LENGTH`: the webhook outbox on RabbitMQ quorum queues instead of Redis or the
    /// spool; `None` (no `AMQP_URL`) keeps those. Only `amqp://`: this build carries no TLS
    /// for the broker.
    pub amqp: Option<AmqpSettings>,
}

/// The webhook outbox's broker: `AMQP_URL`, `AMQP_QUEUE_PREFIX` (default
/// `portcullis.webhooks.`) and `AMQP_MAX_LENGTH` (default 100 000, at least 1). The prefix
/// and bound are checked even without a URL, so a typo never waits for the broker.
fn amqp(env: &dyn Env) -> Result<Option<AmqpSettings>, ConfigError> {
    let queue_prefix = amqp_queue_prefix(env)?;
    let max_length = match env.parsed_or("AMQP_MAX_LENGTH", DEFAULT_MAX_LENGTH)? {
        0 => return Err(ConfigError::new("AMQP_MAX_LENGTH", "must be at least 1")),
        n => n,
    };
    Ok(amqp_url(env)?.map(|url| AmqpSettings { url, queue_prefix, max_length }))
}

/// `AMQP_URL`: checked for its scheme and shape; the message never quotes the value, which
/// holds the broker password.
fn amqp_url(env: &dyn Env) -> Result<Option<SecretString>, ConfigError> {
    use secrecy::ExposeSecret as _;
    let Some(url) = env.secret("AMQP_URL") else { return Ok(None) };
    let scheme = url.expose_secret().split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("amqp") => {}
        Some("amqps") => {
            return Err(ConfigError::new(
                "AMQP_URL",
                "amqps:// is not supported by this build (no TLS for the broker); use amqp:// on the private network",
            ));
        }
        _ => return Err(ConfigError::new("AMQP_URL", "must be an amqp:// URL")),
    }
    if url.expose_secret().parse::<lapin::uri::AMQPUri>().is_err() {
        return Err(ConfigError::new("AMQP_URL", "is not a valid amqp://user:password@host:port/vhost URL"));
    }
    Ok(Some(url))
}

/// `AMQP_QUEUE_PREFIX`: leaves room in the 255 bytes of a queue name for a source (64) and
/// `.dead`, and stays out of the broker's reserved `amq.` names.
fn amqp_queue_prefix(env: &dyn Env) -> Result<String, ConfigError> {
    let prefix = env.string_or("AMQP_QUEUE_PREFIX", DEFAULT_QUEUE_PREFIX);
    if prefix.len() > 180 || !prefix.chars().all(|c| c.is_ascii_graphic()) || prefix.starts_with("amq.") {
        return Err(ConfigError::new(
            "AMQP_QUEUE_PREFIX",
            "must be at most 180 printable ASCII characters and not start with amq.",
        ));
    }
    Ok(prefix)
}

fn secret(
    env: &dyn Env,
    mode: Mode,
    variable: &str,
    override_value: Option<SecretString>,
) -> Result<SecretString, ConfigError> {
    platform::config::shared_secret(env, variable, "gateway", mode == Mode::Distributed, override_value)
}

/// A service address: the variable, else the embedded default, else (distributed) an error.
fn service_url(env: &dyn Env, variable: &str, default: Option<&str>) -> Result<Upstream, ConfigError> {
    match env.string(variable).as_deref().or(default) {
        Some(raw) => Upstream::parse(raw).map_err(|e| ConfigError::new(variable, e)),
        None => Err(ConfigError::new(variable, "is required when the gateway runs alone")),
    }
}

fn redis_url(env: &dyn Env, mode: Mode) -> Result<Option<SecretString>, ConfigError> {
    let why = "the gateway runs alone: rate limits and replay guards are shared through it";
    platform::config::redis_url(env, (mode == Mode::Distributed).then_some(why))
}

/// Loads the routes file, naming `GATEWAY_CONFIG` and, inside the message, the file and line.
pub fn load_routes(path: &Path) -> Result<RoutesFile, ConfigError> {
    RoutesFile::load(path).map_err(|e| ConfigError::new("GATEWAY_CONFIG", e))
}

impl GatewayConfig {
    /// Reads the configuration with secrets from the environment only.
    pub fn from_env(env: &dyn Env, mode: Mode) -> Result<Self, ConfigError> {
        Self::from_env_with(env, mode, SecretOverrides::default())
    }

    /// Reads the configuration, taking secrets from `overrides` where given (see
    /// [`SecretOverrides`]), and loads the routes file if `GATEWAY_CONFIG` names one.
    pub fn from_env_with(env: &dyn Env, mode: Mode, overrides: SecretOverrides) -> Result<Self, ConfigError> {
        let env = &VARIABLES.scope(env)?;
        let (port_var, default_host, local_default) = match mode {
            Mode::Embedded => ("GATEWAY_PORT", "127.0.0.1", true),
            Mode::Distributed => ("PORT", "0.0.0.0", false),
        };
        let host = env.parsed_or("HOST", default_host.parse().map_err(|e| ConfigError::new("HOST", e))?)?;
        let port = env.parsed_or(port_var, DEFAULT_PORT)?;
        let auth_service_url = service_url(env, "AUTH_SERVICE_URL", local_default.then_some(DEFAULT_AUTH_SERVICE_URL))?;
        let auth_http_url = service_url(env, "AUTH_HTTP_URL", local_default.then_some(DEFAULT_AUTH_HTTP_URL))?;
        let socket_service_url = service_url(env, "SOCKET_SERVICE_URL", Some(DEFAULT_SOCKET_SERVICE_URL))?;
        let service_secret = secret(env, mode, "SERVICE_SECRET", overrides.service_secret)?;
        let context_signing_secret = secret(env, mode, "CONTEXT_SIGNING_SECRET", overrides.context_signing_secret)?;
        let redis_url = redis_url(env, mode)?;
        let log_json = platform::config::log_json(env, mode == Mode::Distributed)?;
        let routes_file = env.string("GATEWAY_CONFIG").map(PathBuf::from);
        let routes = routes_file.as_deref().map(load_routes).transpose()?.unwrap_or_default();
        Ok(Self {
            mode,
            host,
            port,
            auth_service_url,
            auth_http_url,
            socket_service_url,
            service_secret,
            context_signing_secret,
            redis_url,
            redis_key_prefix: env.string_or("REDIS_KEY_PREFIX", DEFAULT_REDIS_KEY_PREFIX),
            trusted_proxies: TrustedProxies::parse("TRUSTED_PROXIES", env.string("TRUSTED_PROXIES").as_deref())?,
            cors_origins: platform::config::origin_list(env, "CORS_ORIGIN")?,
            ip_allowlist_enabled: env.bool_or("IP_WHITELIST_ENABLED", true)?,
            origin_validation_enabled: env.bool_or("ORIGIN_VALIDATION_ENABLED", true)?,
            routes_file,
            routes,
            log_json,
            listener: platform::serve::ListenerLimits::from_env(env, 2)?,
            edge_threads: edge_threads(env)?,
            ip_rate_limit: env
                .string("IP_RATE_LIMIT")
                .map(|raw| RateLimit::parse(&raw).map_err(|e| ConfigError::new("IP_RATE_LIMIT", e)))
                .transpose()?,
            auth_failure_limit: platform::counters::FailureGuard::limit_from_env(env)?,
            rate_limit_mode: env
                .string("RATE_LIMIT_MODE")
                .map(|raw| LimitMode::parse(&raw).map_err(|e| ConfigError::new("RATE_LIMIT_MODE", e)))
                .transpose()?
                .unwrap_or(LimitMode::Exact),
            tenant_rate_limit_max: RateLimit::from_env(env, "TENANT_RATE_LIMIT_MAX")?,
            data_dir: PathBuf::from(env.string_or("DATA_DIR", DEFAULT_DATA_DIR)),
            amqp: amqp(env)?,
        })
    }
}

fn edge_threads(env: &dyn Env) -> Result<usize, ConfigError> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let threads: usize = env.parsed_or("TOKIO_WORKER_THREADS", cpus)?;
    if threads == 0 {
        return Err(ConfigError::new("TOKIO_WORKER_THREADS", "must be at least 1"));
    }
    Ok(threads)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use std::{io::Write, net::Ipv4Addr};

    use platform::env::MapEnv;

    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";
    const OTHER: &str = "fedcba9876543210fedcba9876543210";

    fn distributed_env(pairs: &[(&str, &str)]) -> MapEnv {
        let mut env = MapEnv::new([
            ("AUTH_SERVICE_URL", "http://auth:50051"),
            ("AUTH_HTTP_URL", "http://auth:4001"),
            ("SERVICE_SECRET", GOOD),
            ("CONTEXT_SIGNING_SECRET", OTHER),
            ("REDIS_URL", "redis://redis:6379"),
        ]);
        for (k, v) in pairs {
            env.set(*k, *v);
        }
        env
    }

    fn distributed(pairs: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::from_env(&distributed_env(pairs), Mode::Distributed)
    }

    fn embedded(pairs: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
        let overrides = SecretOverrides {
            service_secret: Some(SecretString::from(GOOD)),
            context_signing_secret: Some(SecretString::from(OTHER)),
        };
        GatewayConfig::from_env_with(&MapEnv::new(pairs.iter().copied()), Mode::Embedded, overrides)
    }

    #[test]
    fn the_table_declares_every_variable_read_and_its_defaults() {
        let problems = platform::env::check_table(
            &VARIABLES,
            |mode| if mode == Mode::Distributed { distributed_env(&[]) } else { MapEnv::default() },
            |env, mode| match mode {
                Mode::Distributed => GatewayConfig::from_env(env, mode),
                Mode::Embedded => GatewayConfig::from_env_with(
                    env,
                    mode,
                    SecretOverrides {
                        service_secret: Some(SecretString::from(GOOD)),
                        context_signing_secret: Some(SecretString::from(OTHER)),
                    },
                ),
            },
        );
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn distributed_mode_requires_its_services_secrets_and_redis() {
        for var in ["AUTH_SERVICE_URL", "AUTH_HTTP_URL", "SERVICE_SECRET", "CONTEXT_SIGNING_SECRET", "REDIS_URL"] {
            let err = distributed(&[(var, "")]).unwrap_err();
            assert_eq!(err.variable, var);
            assert!(err.to_string().contains(var), "{err}");
        }
        assert!(distributed(&[]).is_ok());
    }

    #[test]
    fn short_secrets_name_their_variable() {
        for var in ["SERVICE_SECRET", "CONTEXT_SIGNING_SECRET"] {
            let err = distributed(&[(var, "too-short")]).unwrap_err();
            assert_eq!(err.variable, var);
            assert!(err.message.contains("32 bytes"), "{err}");
        }
        let overrides =
            SecretOverrides { service_secret: Some(SecretString::from("short")), ..SecretOverrides::default() };
        let err = GatewayConfig::from_env_with(&distributed_env(&[]), Mode::Distributed, overrides).unwrap_err();
        assert_eq!(err.variable, "SERVICE_SECRET");
    }

    #[test]
    fn embedded_mode_defaults_to_local_services() {
        let c = embedded(&[]).unwrap();
        assert_eq!(c.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.port, 8080);
        assert_eq!(c.auth_service_url.to_string(), "http://127.0.0.1:50051");
        assert_eq!(c.auth_http_url.to_string(), "http://127.0.0.1:4001");
        assert_eq!(c.socket_service_url.to_string(), "http://127.0.0.1:4004");
        assert!(c.redis_url.is_none());
        assert!(c.cors_origins.is_empty());
        assert!(c.ip_allowlist_enabled && c.origin_validation_enabled);
        assert!(!c.log_json);
        assert!(c.routes_file.is_none() && c.routes.routes.is_empty() && c.routes.webhooks.is_empty());
        assert_eq!(c.service_secret.expose_secret(), GOOD);
        assert_eq!(c.context_signing_secret.expose_secret(), OTHER);
    }

    #[test]
    fn embedded_mode_reads_its_own_port_and_secrets_from_the_env() {
        let env = MapEnv::new([
            ("GATEWAY_PORT", "0"),
            ("PORT", "9999"),
            ("SERVICE_SECRET", GOOD),
            ("CONTEXT_SIGNING_SECRET", OTHER),
        ]);
        let c = GatewayConfig::from_env(&env, Mode::Embedded).unwrap();
        assert_eq!(c.port, 0);
        assert_eq!(c.service_secret.expose_secret(), GOOD);

        // An override is what the auth service resolved, so it wins over the variable.
        let overrides = SecretOverrides { service_secret: Some(SecretString::from(OTHER)), ..Default::default() };
        let c = GatewayConfig::from_env_with(&env, Mode::Embedded, overrides).unwrap();
        assert_eq!(c.service_secret.expose_secret(), OTHER);

        let err = GatewayConfig::from_env(&MapEnv::default(), Mode::Embedded).unwrap_err();
        assert_eq!(err.variable, "SERVICE_SECRET");
    }

    #[test]
    fn distributed_defaults() {
        let c = distributed(&[]).unwrap();
        assert_eq!(c.host.to_string(), "0.0.0.0");
        assert_eq!(c.port, 8080);
        assert_eq!(c.socket_service_url.to_string(), "http://127.0.0.1:4004");
        assert!(c.log_json);
        assert_eq!(c.redis_key_prefix, "portcullis:");
        assert_eq!(distributed(&[("PORT", "9000"), ("GATEWAY_PORT", "1")]).unwrap().port, 9000);
        assert_eq!(c.rate_limit_mode, LimitMode::Exact);
        let synced = distributed(&[("RATE_LIMIT_MODE", "synced")]).unwrap().rate_limit_mode;
        assert!(matches!(synced, LimitMode::Synced { every } if every <= std::time::Duration::from_millis(100)));
    }

    #[test]
    fn cors_origins_are_exact_and_canonical() {
        let c = distributed(&[(
            "CORS_ORIGIN",
            " https://App.example.com:443, http://localhost:3000,,https://app.example.com ",
        )])
        .unwrap();
        let origins: Vec<&str> = c.cors_origins.iter().map(Origin::as_str).collect();
        assert_eq!(origins, ["https://app.example.com", "http://localhost:3000"]);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("PORT", "http"),
            ("PORT", "70000"),
            ("HOST", "localhost"),
            ("AUTH_SERVICE_URL", "auth:50051"),
            ("AUTH_HTTP_URL", "http://user:pw@auth:4001"),
            ("SOCKET_SERVICE_URL", "ws://socket:4004"),
            ("REDIS_URL", "http://redis:6379"),
            ("TRUSTED_PROXIES", "10.0.0.0/8,nope"),
            ("CORS_ORIGIN", "https://app.example.com/"),
            ("CORS_ORIGIN", "https://*.example.com"),
            ("CORS_ORIGIN", "*"),
            ("IP_WHITELIST_ENABLED", "sometimes"),
            ("ORIGIN_VALIDATION_ENABLED", "2"),
            ("LOG_FORMAT", "xml"),
            ("RATE_LIMIT_MODE", "local"),
            ("GATEWAY_CONFIG", "/nonexistent/portcullis/routes.toml"),
        ] {
            let err = distributed(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var, "{var}={value}: {err}");
        }
    }

    #[test]
    fn amqp_defaults_keep_the_outbox_where_it_was() {
        assert!(distributed(&[]).unwrap().amqp.is_none());
        assert!(embedded(&[]).unwrap().amqp.is_none());
        let amqp = distributed(&[("AMQP_URL", "amqp://gw:s3cret@rabbit:5672/%2f")]).unwrap().amqp.unwrap();
        assert_eq!(amqp.url.expose_secret(), "amqp://gw:s3cret@rabbit:5672/%2f");
        assert_eq!(amqp.queue_prefix, "portcullis.webhooks.");
        assert_eq!(amqp.max_length, 100_000);
        let amqp = distributed(&[
            ("AMQP_URL", "AMQP://gw:s3cret@rabbit"),
            ("AMQP_QUEUE_PREFIX", "acme.hooks."),
            ("AMQP_MAX_LENGTH", "500"),
        ])
        .unwrap()
        .amqp
        .unwrap();
        assert_eq!(amqp.queue_prefix, "acme.hooks.");
        assert_eq!(amqp.max_length, 500);
    }

    #[test]
    fn bad_amqp_values_name_their_variable_and_never_echo_the_password() {
        for (var, value) in [
            ("AMQP_URL", "amqps://gw:hunter2@rabbit:5671/%2f"),
            ("AMQP_URL", "redis://gw:hunter2@rabbit:5672"),
            ("AMQP_URL", "amqp://gw:hunter2@[bad"),
            ("AMQP_URL", "gw:hunter2@rabbit"),
            ("AMQP_MAX_LENGTH", "0"),
            ("AMQP_MAX_LENGTH", "lots"),
            ("AMQP_QUEUE_PREFIX", "amq.webhooks."),
            ("AMQP_QUEUE_PREFIX", "with space."),
        ] {
            let err = distributed(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var, "{var}={value}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let err = distributed(&[("AMQP_URL", "amqps://gw:hunter2@rabbit")]).unwrap_err();
        assert!(err.to_string().contains("amqp://"), "{err}");
    }

    #[test]
    fn redis_url_is_never_echoed() {
        let err = distributed(&[("REDIS_URL", "http://:hunter2@redis")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn routes_file_is_loaded_and_its_errors_name_variable_file_and_line() {
        let mut good = tempfile::NamedTempFile::new().unwrap();
        write!(good, "[[routes]]\nprefix = \"/v1/user/orders\"\nupstream = \"http://127.0.0.1:9001\"\n").unwrap();
        let path = good.path().to_string_lossy().into_owned();
        let c = distributed(&[("GATEWAY_CONFIG", &path)]).unwrap();
        assert_eq!(c.routes_file.as_deref(), Some(good.path()));
        assert!(c.routes.routes.match_route("/v1/user/orders/7").is_some());

        let mut bad = tempfile::NamedTempFile::new().unwrap();
        write!(bad, "[[routes]]\nprefix = \"/v1/user/orders\"\nupstream = \"http://127.0.0.1:9001\"\nretries = 9\n")
            .unwrap();
        let path = bad.path().to_string_lossy().into_owned();
        let err = distributed(&[("GATEWAY_CONFIG", &path)]).unwrap_err();
        assert_eq!(err.variable, "GATEWAY_CONFIG");
        let text = err.to_string();
        assert!(text.contains(&path) && text.contains("line 4,") && text.contains("retries"), "{text}");
    }
}
