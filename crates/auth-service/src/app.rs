//! Building and running the auth service: connecting the backends the configuration names,
//! and serving HTTP until shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc};

use platform::shutdown::Shutdown;

use platform::{
    bus::{EventBus, MemoryBus, RedisBus},
    clock::{Clock, SystemClock},
    counters::{Counters, MemoryCounters, RedisCounters},
};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::{
    config::{AuthConfig, Backend},
    error::Error,
    service::{AuthService, Deps},
    store::{CachedStore, PostgresStore, SqliteStore, Store},
};

/// File name of the embedded database under `DATA_DIR`.
pub const SQLITE_FILE: &str = "portcullis.db";

/// The shared dependencies a process runs on; in the all-in-one binary every service uses
/// the same bus, so embedded events reach every service.
#[derive(Clone)]
pub struct Backends {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    pub counters: Arc<dyn Counters>,
}

impl Backends {
    /// Connects what the configuration names: SQLite + in-process bus and counters, or
    /// PostgreSQL + Redis. Migrations are applied here. The store is wrapped in the in-memory
    /// cache, which follows the bus.
    pub async fn connect(config: &AuthConfig) -> Result<Self, Error> {
        let raw = Self::connect_raw(config).await?;
        let cached = Arc::new(CachedStore::new(raw.store));
        cached.clone().follow(raw.bus.clone()).await?;
        Ok(Self { store: cached, ..raw })
    }

    async fn connect_raw(config: &AuthConfig) -> Result<Self, Error> {
        match &config.backend {
            Backend::Embedded { data_dir } => {
                let cannot =
                    |e: std::io::Error| Error::Unavailable(format!("cannot prepare {}: {e}", data_dir.display()));
                platform::fs::private_dir(data_dir).map_err(cannot)?;
                let file = data_dir.join(SQLITE_FILE);
                platform::fs::private_file(&file).map_err(cannot)?;
                let store = SqliteStore::open(&file).await?;
                Ok(Self {
                    store: Arc::new(store),
                    bus: Arc::new(MemoryBus::default()),
                    counters: Arc::new(MemoryCounters::default()),
                })
            }
            Backend::Shared { database_url, redis_url } => {
                let store = PostgresStore::connect(database_url.expose_secret(), 20).await?;
                let pool = platform::redis::connect(redis_url.expose_secret()).await?;
                let bus = RedisBus::new(redis_url.expose_secret(), pool.clone())?;
                let counters = RedisCounters::new(pool, format!("{}rl:", config.redis_key_prefix));
                Ok(Self { store: Arc::new(store), bus: Arc::new(bus), counters: Arc::new(counters) })
            }
        }
    }

    pub fn deps(&self, clock: Arc<dyn Clock>) -> Deps {
        Deps { store: self.store.clone(), bus: self.bus.clone(), counters: self.counters.clone(), clock }
    }
}

/// Builds the service on freshly connected backends with the system clock.
pub async fn build(config: AuthConfig) -> Result<AuthService, Error> {
    let backends = Backends::connect(&config).await?;
    AuthService::new(config, backends.deps(Arc::new(SystemClock)))
}

/// The sockets the service listens on.
#[derive(Debug)]
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
}

/// Binds the HTTP and gRPC sockets (port 0 picks a free one).
pub async fn bind(http: SocketAddr, grpc: SocketAddr) -> std::io::Result<Listeners> {
    Ok(Listeners { http: TcpListener::bind(http).await?, grpc: TcpListener::bind(grpc).await? })
}

/// Serves HTTP and gRPC until `shutdown` resolves, then drains in-flight requests. Also runs
/// the periodic cleanup.
pub async fn run(
    service: AuthService,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shutdown = Shutdown::new(shutdown);
    let cleanup = service.spawn_cleanup(shutdown.wait());
    let grpc = tokio::spawn(crate::grpc::serve(service.clone(), listeners.grpc, shutdown.wait()));
    let limits = service.config().listener;
    let app = crate::http::router(service);
    let http = platform::serve::serve(listeners.http, app, limits, shutdown.wait()).await;
    cleanup.abort();
    match grpc.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(std::io::Error::other(err)),
        Err(err) => return Err(std::io::Error::other(err)),
    }
    http
}
