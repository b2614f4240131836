//! The `auth-service` binary: the auth service alone, on PostgreSQL and Redis.

use std::{net::SocketAddr, process::ExitCode};

use auth_service::{AuthConfig, Mode};
use platform::env::OsEnv;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match AuthConfig::from_env(&OsEnv, Mode::Distributed) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("auth-service: {err}");
            return ExitCode::from(2);
        }
    };
    platform::telemetry::init(config.log_json);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let http_addr = SocketAddr::new(config.host, config.port);
    let grpc_addr = SocketAddr::new(config.host, config.grpc_port);
    let service = match auth_service::build(config).await {
        Ok(service) => service,
        Err(err) => {
            tracing::error!(error = %err, "auth-service could not start");
            return ExitCode::FAILURE;
        }
    };
    let listeners = match auth_service::app::bind(http_addr, grpc_addr).await {
        Ok(listeners) => listeners,
        Err(err) => {
            tracing::error!(error = %err, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(http = ?listeners.http.local_addr().ok(), grpc = ?listeners.grpc.local_addr().ok(), "auth-service listening");
    match auth_service::run(service, listeners, platform::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "server error");
            ExitCode::FAILURE
        }
    }
}
