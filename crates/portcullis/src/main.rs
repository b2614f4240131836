//! The all-in-one Portcullis binary: every service in one process. By default it runs
//! embedded (SQLite under `DATA_DIR`, the in-process bus, dev secrets generated once); with
//! `DATABASE_URL` and `REDIS_URL` set it uses PostgreSQL and Redis instead. The auth service
//! listens on `AUTH_PORT`/`AUTH_GRPC_PORT`, the gateway on `GATEWAY_PORT` and the socket
//! service on `SOCKET_PORT`; the gateway and the socket service are told the addresses their
//! neighbours actually bound and the secrets the auth service resolved.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use auth_service::{AuthConfig, AuthService, Backends, Mode};
use gateway::{GatewayConfig, GatewayDeps, SecretOverrides};
use platform::{
    clock::SystemClock,
    env::{MapEnv, OsEnv, Overlay},
    exit::{Failure, finish},
    health::reachable,
    shutdown::Shutdown,
};
use secrecy::ExposeSecret;
use socket_service::{Deps, SocketConfig, SocketService};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    if platform::health::requested() {
        return platform::health::probe_configured("portcullis", listeners());
    }
    // Every service's configuration is read before anything starts, so a bad variable of any
    // of them is a configuration error (exit 2) naming it.
    let config = AuthConfig::from_env(&OsEnv, Mode::Embedded)
        .map_err(|e| e.to_string())
        .and_then(|auth| neighbours_of(&auth).map(|_| auth))
        .map_err(Failure::config);
    let outcome = match config {
        Ok(mut config) => {
            // The gateway runs in this process and forwards from loopback: the auth and socket
            // services believe its `X-Forwarded-For` (the gateway itself keeps TRUSTED_PROXIES as set).
            config.trusted_proxies = config.trusted_proxies.clone().with_loopback();
            match platform::telemetry::start(config.log_json, &OsEnv, "portcullis") {
                Ok(()) => {
                    for warning in config.warnings() {
                        tracing::warn!("{warning}");
                    }
                    serve(config).await.map_err(Failure::Run)
                }
                Err(failure) => Err(failure),
            }
        }
        Err(failure) => Err(failure),
    };
    finish("portcullis", outcome)
}

/// The secrets the auth service resolved, handed to the gateway and the socket service.
fn secrets_of(auth: &AuthConfig) -> (SecretOverrides, socket_service::SecretOverrides) {
    let gateway = SecretOverrides {
        service_secret: Some(auth.service_secret.clone()),
        context_signing_secret: Some(auth.context_signing_secret.clone()),
    };
    let socket = socket_service::SecretOverrides {
        service_secret: Some(auth.service_secret.clone()),
        context_signing_secret: Some(auth.context_signing_secret.clone()),
    };
    (gateway, socket)
}

/// The gateway's and the socket service's configurations as the environment and the auth
/// service's secrets give them (their neighbours' addresses are filled in once bound).
fn neighbours_of(auth: &AuthConfig) -> Result<(GatewayConfig, SocketConfig), String> {
    let (overrides, socket_overrides) = secrets_of(auth);
    let gateway = GatewayConfig::from_env_with(&OsEnv, gateway::Mode::Embedded, overrides)
        .map_err(|e| format!("gateway configuration: {e}"))?;
    let socket = SocketConfig::from_env_with(&OsEnv, socket_service::Mode::Embedded, socket_overrides)
        .map_err(|e| format!("socket service configuration: {e}"))?;
    Ok((gateway, socket))
}

/// `portcullis health`: the addresses the three services are configured to listen on (fixed
/// ports: with `0` the probe cannot know where they went). Secrets come from the auth
/// service's configuration as when serving, so the probe reads what the running binary read.
fn listeners() -> Result<Vec<SocketAddr>, String> {
    let auth = AuthConfig::from_env(&OsEnv, Mode::Embedded).map_err(|e| e.to_string())?;
    let (gateway, socket) = neighbours_of(&auth)?;
    Ok(vec![
        SocketAddr::new(auth.host, auth.port),
        SocketAddr::new(gateway.host, gateway.port),
        SocketAddr::new(socket.host, socket.port),
    ])
}

async fn serve(config: AuthConfig) -> Result<(), String> {
    let backends = Backends::connect(&config).await.map_err(|e| format!("cannot start: {}", e.with_cause()))?;
    let (storage, redis_url) = match &config.backend {
        auth_service::Backend::Embedded { data_dir } => {
            (format!("SQLite at {}", data_dir.join(auth_service::SQLITE_FILE).display()), None)
        }
        auth_service::Backend::Shared { redis_url, .. } => {
            ("PostgreSQL and Redis".to_owned(), Some(redis_url.expose_secret().to_owned()))
        }
    };
    let http_addr = SocketAddr::new(config.host, config.port);
    let grpc_addr = SocketAddr::new(config.host, config.grpc_port);
    let trusted_proxies = config.trusted_proxies.clone();
    // A rotation's previous context secrets (the variable, or kept under DATA_DIR by `cargo
    // xtask keys rotate`), as the auth service resolved them, for the socket service to verify.
    let context_previous = config.context_signing_previous_secrets.clone();
    let (overrides, socket_overrides) = secrets_of(&config);
    let service = AuthService::new(config, backends.deps(Arc::new(SystemClock)))
        .map_err(|e| format!("cannot start: {}", e.with_cause()))?;
    let listeners = auth_service::bind(http_addr, grpc_addr)
        .await
        .map_err(|e| format!("cannot listen on {http_addr} / {grpc_addr}: {e}"))?;
    let auth_addr = listeners.http.local_addr().map_err(|e| e.to_string())?;
    let grpc_addr = listeners.grpc.local_addr().map_err(|e| e.to_string())?;

    let auth_only =
        Overlay { top: MapEnv::new([("AUTH_SERVICE_URL", format!("http://{}", reachable(grpc_addr)))]), base: &OsEnv };
    let mut socket_config = SocketConfig::from_env_with(&auth_only, socket_service::Mode::Embedded, socket_overrides)
        .map_err(|e| format!("socket service configuration: {e}"))?;
    let socket_deps = match &redis_url {
        Some(url) => {
            Deps::redis(url, &socket_config.redis_key_prefix).await.map_err(|e| format!("cannot start: {e}"))?
        }
        None => Deps::in_memory(backends.bus.clone()),
    };
    let socket_addr = SocketAddr::new(socket_config.host, socket_config.port);
    socket_config.trusted_proxies = trusted_proxies;
    socket_config.context_signing_previous_secrets = context_previous;
    let sockets = SocketService::new(socket_config, socket_deps).map_err(|e| format!("cannot start: {e}"))?;
    let socket_listener =
        tokio::net::TcpListener::bind(socket_addr).await.map_err(|e| format!("cannot listen on {socket_addr}: {e}"))?;
    let socket_addr = socket_listener.local_addr().map_err(|e| e.to_string())?;

    let neighbours = Overlay {
        top: MapEnv::new([
            ("AUTH_SERVICE_URL", format!("http://{}", reachable(grpc_addr))),
            ("AUTH_HTTP_URL", format!("http://{}", reachable(auth_addr))),
            ("SOCKET_SERVICE_URL", format!("http://{}", reachable(socket_addr))),
        ]),
        base: &OsEnv,
    };
    let gateway_config = GatewayConfig::from_env_with(&neighbours, gateway::Mode::Embedded, overrides)
        .map_err(|e| format!("gateway configuration: {e}"))?;
    let redis = match &redis_url {
        Some(url) => Some(platform::redis::connect(url).await.map_err(|e| format!("cannot start: {e}"))?),
        None => None,
    };
    let gateway_addr = SocketAddr::new(gateway_config.host, gateway_config.port);
    let gateway = gateway::start(
        gateway_config,
        GatewayDeps { bus: backends.bus.clone(), redis, clock: Arc::new(platform::clock::SystemClock) },
    )
    .await?;
    let gateway_listener = tokio::net::TcpListener::bind(gateway_addr)
        .await
        .map_err(|e| format!("cannot listen on {gateway_addr}: {e}"))?;
    let gateway_addr = gateway_listener.local_addr().map_err(|e| e.to_string())?;

    print_banner(Addresses { auth: auth_addr, grpc: grpc_addr, gateway: gateway_addr, socket: socket_addr }, &storage);
    let shutdown = Shutdown::new(platform::shutdown::signal());
    let auth = auth_service::run(service, listeners, shutdown.wait());
    let edge = gateway::run(gateway, gateway_listener, shutdown.wait());
    let socket = socket_service::run(sockets, socket_listener, shutdown.wait());
    tokio::try_join!(auth, edge, socket).map(drop).map_err(|e| format!("server error: {e}"))
}

/// Where each service ended up listening.
struct Addresses {
    auth: SocketAddr,
    grpc: SocketAddr,
    gateway: SocketAddr,
    socket: SocketAddr,
}

fn print_banner(at: Addresses, storage: &str) {
    let edge = format!("http://{}", at.gateway);
    let base = format!("http://{}", at.auth);
    let (grpc, socket) = (at.grpc, at.socket);
    println!(
        "\nPortcullis is running (embedded, {storage}).\n\
         \n  gateway        {edge}\n  auth service   {base}/api/v1/auth\n  auth gRPC      {grpc}\n  sockets        ws://{socket}/ws (through the gateway: {edge}/v1/socket)\n  OpenAPI        {base}/openapi.json\n  health         {edge}/health\n\
         \nTry it (through the gateway):\n  curl -s {edge}/v1/auth/signup -H 'content-type: application/json' \\\n       \
         -d '{{\"name\":\"Ada\",\"email\":\"ada@example.com\",\"password\":\"correct horse battery staple\"}}'\n"
    );
}
