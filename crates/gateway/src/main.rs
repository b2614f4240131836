//! The `gateway` binary: the public edge alone (distributed mode), on Redis for events,
//! shared rate limits and webhook storage.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use gateway::{GatewayConfig, GatewayDeps, Mode};
use platform::{bus::RedisBus, env::OsEnv};
use secrecy::ExposeSecret;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match GatewayConfig::from_env(&OsEnv, Mode::Distributed) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("gateway: {err}");
            return ExitCode::from(2);
        }
    };
    platform::telemetry::init(config.log_json);
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            eprintln!("gateway: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: GatewayConfig) -> Result<(), String> {
    let url = config.redis_url.as_ref().ok_or("REDIS_URL is required")?.expose_secret().to_owned();
    let pool = platform::redis::connect(&url).await.map_err(|e| format!("cannot start: {e}"))?;
    let bus = RedisBus::new(&url, pool.clone()).map_err(|e| format!("cannot start: {e}"))?;
    let addr = SocketAddr::new(config.host, config.port);
    let gateway = gateway::start(
        config,
        GatewayDeps { bus: Arc::new(bus), redis: Some(pool), clock: Arc::new(platform::clock::SystemClock) },
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr().map_err(|e| e.to_string())?, "gateway listening");
    gateway::run(gateway, listener, platform::shutdown::signal()).await.map_err(|e| format!("server error: {e}"))
}
