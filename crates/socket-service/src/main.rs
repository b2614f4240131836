//! The `socket-service` binary: distributed mode, configuration from the environment, then
//! the same `run` the tests and the all-in-one binary use.

use std::{net::SocketAddr, process::ExitCode};

use platform::{
    env::OsEnv,
    exit::{Failure, finish},
};
use socket_service::{Mode, SocketConfig, SocketService};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    if platform::health::requested() {
        let addr = SocketConfig::from_env(&OsEnv, Mode::Distributed).map(|c| vec![SocketAddr::new(c.host, c.port)]);
        return platform::health::probe_configured("socket-service", addr);
    }
    finish("socket-service", serve().await)
}

async fn serve() -> Result<(), Failure> {
    let config = SocketConfig::from_env(&OsEnv, Mode::Distributed).map_err(Failure::config)?;
    platform::telemetry::start(config.log_json, &OsEnv, "portcullis-sockets")?;
    if config.trusted_proxies.is_empty() {
        tracing::warn!(
            "TRUSTED_PROXIES is empty: behind the gateway every socket client looks like the gateway (IP allowlists \
             and limits see one address); set it to the gateway's address"
        );
    }
    let addr = SocketAddr::new(config.host, config.port);
    let service = SocketService::build(config).await.map_err(|e| Failure::run("cannot start", e))?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| Failure::run("cannot listen", e))?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "socket service listening");
    socket_service::run(service, listener, platform::shutdown::signal())
        .await
        .map_err(|e| Failure::run("server error", e))
}
