//! The `socket-service` binary: distributed mode, configuration from the environment, then
//! the same `run` the tests and the all-in-one binary use.

use std::net::SocketAddr;

use platform::env::OsEnv;
use socket_service::{Mode, SocketConfig, SocketService};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let config = match SocketConfig::from_env(&OsEnv, Mode::Distributed) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("socket-service: {err}");
            std::process::exit(2);
        }
    };
    platform::telemetry::init(config.log_json);
    if config.trusted_proxies.is_empty() {
        tracing::warn!(
            "TRUSTED_PROXIES is empty: behind the gateway every socket client looks like the gateway (IP allowlists \
             and limits see one address); set it to the gateway's address"
        );
    }
    let addr = SocketAddr::new(config.host, config.port);
    let service = match SocketService::build(config).await {
        Ok(service) => service,
        Err(err) => {
            tracing::error!(error = %err, "socket service cannot start");
            std::process::exit(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(error = %err, %addr, "cannot listen");
            std::process::exit(1);
        }
    };
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "socket service listening");
    if let Err(err) = socket_service::run(service, listener, platform::shutdown::signal()).await {
        tracing::error!(error = %err, "socket service stopped with an error");
        std::process::exit(1);
    }
}
