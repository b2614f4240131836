//! The `gateway` binary: the public edge alone (distributed mode), on Redis for events,
//! shared rate limits and webhook storage.

use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use gateway::{GatewayConfig, GatewayDeps, Mode};
use platform::{
    bus::RedisBus,
    env::OsEnv,
    exit::{Failure, finish},
};
use secrecy::ExposeSecret;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Requests are served on the edge's own threads (`TOKIO_WORKER_THREADS` of them, see
/// `gateway::run_on_threads`); this runtime's one worker runs the background work.
fn main() -> ExitCode {
    if platform::health::requested() {
        let addr = GatewayConfig::from_env(&OsEnv, Mode::Distributed).map(|c| vec![SocketAddr::new(c.host, c.port)]);
        return platform::health::probe_configured("gateway", addr);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => return finish("gateway", Err(Failure::run("cannot start the runtime", err))),
    };
    finish("gateway", runtime.block_on(serve()))
}

async fn serve() -> Result<(), Failure> {
    let config = GatewayConfig::from_env(&OsEnv, Mode::Distributed).map_err(Failure::config)?;
    platform::telemetry::start(config.log_json, &OsEnv, "portcullis-gateway")?;
    let url = config.redis_url.as_ref().ok_or(Failure::config("REDIS_URL is required"))?.expose_secret().to_owned();
    let pool = platform::redis::connect(&url).await.map_err(|e| Failure::run("cannot start", e))?;
    let bus = RedisBus::new(&url, pool.clone()).map_err(|e| Failure::run("cannot start", e))?;
    let addr = SocketAddr::new(config.host, config.port);
    let deps = GatewayDeps { bus: Arc::new(bus), redis: Some(pool), clock: Arc::new(platform::clock::SystemClock) };
    let gateway = gateway::start(config, deps).await.map_err(|e| Failure::run("cannot start", e))?;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| Failure::run("cannot listen", e))?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "gateway listening");
    gateway::run_on_threads(gateway, listener, platform::shutdown::signal())
        .await
        .map_err(|e| Failure::run("server error", e))
}
