//! The `auth-service` binary: the auth service alone, on PostgreSQL and Redis.

use std::{net::SocketAddr, process::ExitCode};

use auth_service::{AuthConfig, Mode};
use platform::{
    env::OsEnv,
    exit::{Failure, finish},
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    if platform::health::requested() {
        let http = AuthConfig::from_env(&OsEnv, Mode::Distributed).map(|c| vec![SocketAddr::new(c.host, c.port)]);
        return platform::health::probe_configured("auth-service", http);
    }
    finish("auth-service", serve().await)
}

async fn serve() -> Result<(), Failure> {
    let config = AuthConfig::from_env(&OsEnv, Mode::Distributed).map_err(Failure::config)?;
    platform::telemetry::start(config.log_json, &OsEnv, "portcullis-auth")?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let http_addr = SocketAddr::new(config.host, config.port);
    let grpc_addr = SocketAddr::new(config.host, config.grpc_port);
    let service = auth_service::build(config).await.map_err(|e| Failure::run("cannot start", e.with_cause()))?;
    let listeners = auth_service::bind(http_addr, grpc_addr).await.map_err(|e| Failure::run("cannot listen", e))?;
    tracing::info!(http = ?listeners.http.local_addr().ok(), grpc = ?listeners.grpc.local_addr().ok(), "auth-service listening");
    auth_service::run(service, listeners, platform::shutdown::signal())
        .await
        .map_err(|e| Failure::run("server error", e))
}
