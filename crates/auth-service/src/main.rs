//! The `auth-service` binary: the auth service alone, on PostgreSQL and Redis.

use std::{net::SocketAddr, process::ExitCode};

use auth_service::{AuthConfig, Mode};
use platform::env::OsEnv;

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
    let addr = SocketAddr::new(config.host, config.port);
    let service = match auth_service::build(config).await {
        Ok(service) => service,
        Err(err) => {
            tracing::error!(error = %err, "auth-service could not start");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(err) => {
            tracing::error!(error = %err, %addr, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "auth-service listening");
    let cleanup = service.spawn_cleanup(platform::shutdown::signal());
    let served = auth_service::run(service, listener, platform::shutdown::signal()).await;
    cleanup.abort();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "server error");
            ExitCode::FAILURE
        }
    }
}
