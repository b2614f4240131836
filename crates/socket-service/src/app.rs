//! Building and running the socket service: its dependencies (Redis or in-process stores and
//! bus), the service handle the handlers share, the bus follower that delivers publishes and
//! closes revoked connections, and `run`, which the binary, the all-in-one binary and the
//! tests all call.

use std::{future::Future, sync::Arc, time::Duration};

use auth_contract::{AuthClient, ClientConfig, ClientError, ErrorCode, headers::ContextKey};
use axum::extract::FromRef;
use futures::StreamExt;
use platform::{
    Unavailable,
    bus::{BusMessage, EventBus, MemoryBus, RedisBus},
    clock::{Clock, SystemClock},
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::{
    config::SocketConfig,
    hub::Hub,
    metrics::Metrics,
    protocol::close,
    store::{ContextStore, MemoryContextStore, MemoryTicketStore, RedisContextStore, RedisTicketStore, TicketStore},
};

/// How long shutdown waits for connections to finish their close handshake.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    #[error("auth client: {0}")]
    Client(#[from] ClientError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What the service runs on; tests and the all-in-one binary may hand in their own (the
/// embedded process's bus, a shared Redis).
#[derive(Clone)]
pub struct Deps {
    pub bus: Arc<dyn EventBus>,
    pub contexts: Arc<dyn ContextStore>,
    pub tickets: Arc<dyn TicketStore>,
    pub clock: Arc<dyn Clock>,
    /// Shared counters for `AUTH_FAILURE_LIMIT` (Redis); `None` counts on this node only.
    pub counters: Option<Arc<dyn platform::counters::Counters>>,
}

impl Deps {
    /// Everything in process (embedded mode without Redis).
    pub fn in_memory(bus: Arc<dyn EventBus>) -> Self {
        Self {
            bus,
            contexts: Arc::new(MemoryContextStore::default()),
            tickets: Arc::new(MemoryTicketStore::default()),
            clock: Arc::new(SystemClock),
            counters: None,
        }
    }

    /// Redis for the bus, the contexts and the tickets, with keys under `prefix`.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, Unavailable> {
        let pool = platform::redis::connect(url).await?;
        Ok(Self {
            bus: Arc::new(RedisBus::new(url, pool.clone())?),
            contexts: Arc::new(RedisContextStore::new(pool.clone(), prefix)),
            tickets: Arc::new(RedisTicketStore::new(pool.clone(), prefix)),
            clock: Arc::new(SystemClock),
            counters: Some(Arc::new(platform::counters::RedisCounters::new(pool, format!("{prefix}ws:")))),
        })
    }

    /// What the configuration names: Redis when `REDIS_URL` is set, otherwise process memory
    /// with a private bus (the all-in-one binary passes its shared bus through
    /// [`Deps::in_memory`] instead).
    pub async fn connect(config: &SocketConfig) -> Result<Self, Unavailable> {
        match &config.redis_url {
            Some(url) => Self::redis(url.expose_secret(), &config.redis_key_prefix).await,
            None => Ok(Self::in_memory(Arc::new(MemoryBus::default()))),
        }
    }
}

/// Where a publish goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Every connection of a user (or SDK subject), on `user:{id}`.
    UserId(String),
    /// Every subscriber of a channel.
    Channel(String),
    /// Every connection of a tenant, on `tenant:{id}`.
    TenantId(String),
}

/// The envelope a publish travels in between socket nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    target: Target,
    data: Value,
}

pub(crate) struct Inner {
    pub config: SocketConfig,
    pub auth: AuthClient,
    pub deps: Deps,
    pub hub: Hub,
    pub metrics: Metrics,
    pub context_key: ContextKey,
    /// This node's id, stored with each of its connections.
    pub node: String,
    /// The bus channel publishes travel on, under `REDIS_KEY_PREFIX`.
    pub publish_channel: String,
    /// `AUTH_FAILURE_LIMIT`, reserved before each handshake's credential is validated.
    pub auth_failures: platform::counters::FailureGuard,
}

/// The service handle: cheap to clone, shared by handlers and connection tasks.
#[derive(Clone)]
pub struct SocketService {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SocketService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketService").field("node", &self.inner.node).finish_non_exhaustive()
    }
}

impl FromRef<SocketService> for ContextKey {
    fn from_ref(service: &SocketService) -> Self {
        service.inner.context_key.clone()
    }
}

impl SocketService {
    /// Builds the service on the given dependencies. Call it inside a Tokio runtime (the auth
    /// client connects lazily from there).
    pub fn new(config: SocketConfig, deps: Deps) -> Result<Self, StartError> {
        let auth = AuthClient::new(ClientConfig::new(
            config.auth_service_url.clone(),
            "socket-service",
            config.service_secret.clone(),
        ))?;
        let metrics = Metrics::new()?;
        let context_key = ContextKey::new(config.context_signing_secret.expose_secret());
        let publish_channel = format!("{}ws:publish", config.redis_key_prefix);
        let auth_failures = platform::counters::FailureGuard::new(deps.counters.clone(), config.auth_failure_limit);
        Ok(Self {
            inner: Arc::new(Inner {
                auth_failures,
                hub: Hub::new(metrics.clone()),
                auth,
                deps,
                metrics,
                context_key,
                node: uuid::Uuid::new_v4().to_string(),
                publish_channel,
                config,
            }),
        })
    }

    /// Builds the service on what the configuration names.
    pub async fn build(config: SocketConfig) -> Result<Self, StartError> {
        let deps = Deps::connect(&config).await?;
        Self::new(config, deps)
    }

    pub fn config(&self) -> &SocketConfig {
        &self.inner.config
    }

    pub fn auth(&self) -> &AuthClient {
        &self.inner.auth
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn contexts(&self) -> &Arc<dyn ContextStore> {
        &self.inner.deps.contexts
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Unix seconds now, from the injected clock.
    pub(crate) fn now(&self) -> i64 {
        self.inner.deps.clock.now().unix_timestamp()
    }

    /// Sends `data` to a target on every socket node (this one included, through the bus).
    pub async fn publish(&self, target: Target, data: Value) -> Result<(), Unavailable> {
        let payload = serde_json::to_string(&Envelope { target, data }).map_err(|e| Unavailable::new("bus", e))?;
        self.inner.deps.bus.publish(&self.inner.publish_channel, &payload).await
    }

    fn deliver(&self, payload: &str) {
        match serde_json::from_str::<Envelope>(payload) {
            Ok(Envelope { target: Target::UserId(id), data }) => self.inner.hub.to_owner(&id, &data),
            Ok(Envelope { target: Target::Channel(channel), data }) => self.inner.hub.to_channel(&channel, &data),
            Ok(Envelope { target: Target::TenantId(id), data }) => self.inner.hub.to_tenant(&id, &data),
            Err(err) => {
                tracing::warn!(error = %err, "publish envelope not understood; dropped");
                0
            }
        };
    }

    /// Asks the auth service again about every open connection that holds a credential:
    /// after the bus reconnected, revocation events may have been lost. A refused credential
    /// closes its connection (4401 when it merely expired, 4409 otherwise); an unreachable
    /// auth service leaves connections as they are, since their credentials were valid and
    /// the next events or expiry still apply.
    pub async fn revalidate_all(&self) -> usize {
        let auth = &self.inner.auth;
        // The contract client's cache was fed by the same lost events.
        auth.clear();
        let mut closed = 0;
        for conn in self.inner.hub.connections() {
            let Some(credential) = conn.credential() else {
                continue;
            };
            match auth.validate(&credential, conn.ip, conn.origin.as_deref()).await {
                Ok(context) => {
                    let current = conn.context();
                    if context.subject == current.subject && context.session_id == current.session_id {
                        self.inner.hub.update(&conn, context, None);
                    }
                }
                Err(ClientError::Denied { code, .. }) => {
                    let code = if code == ErrorCode::TokenExpired { close::EXPIRED } else { close::SESSION_ENDED };
                    if conn.request_close(code) {
                        closed += 1;
                        if code == close::SESSION_ENDED {
                            self.inner.metrics.revocations.inc();
                        }
                    }
                }
                Err(ClientError::Unavailable(err)) => {
                    tracing::warn!(error = %err, "re-validation skipped: auth service unavailable");
                }
            }
        }
        tracing::info!(closed, "open connections re-validated after a bus reconnect");
        closed
    }

    /// Follows the bus: publishes for this node, account events and revocations. Returns once
    /// the subscription is live.
    pub async fn follow(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, Unavailable> {
        let bus = self.inner.deps.bus.clone();
        let cache_follower = self.inner.auth.follow(bus.clone()).await?;
        let mut events = bus.subscribe(&["auth:*", &self.inner.publish_channel]).await?;
        let service = self.clone();
        let follower = tokio::spawn(async move {
            while let Some(message) = events.next().await {
                match message {
                    BusMessage::Event(event) if event.channel == service.inner.publish_channel => {
                        service.deliver(&event.payload);
                    }
                    BusMessage::Event(event) => service.inner.hub.apply_auth_event(&event.channel, &event.payload),
                    BusMessage::Resubscribed => {
                        let service = service.clone();
                        tokio::spawn(async move {
                            service.revalidate_all().await;
                        });
                    }
                }
            }
            tracing::warn!("bus subscription ended");
        });
        Ok(vec![cache_follower, follower])
    }
}

/// Serves the socket service on `listener` until `shutdown` completes, then closes every
/// connection with 1001 and waits (briefly) for them to finish.
pub async fn run(
    service: SocketService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let followers = service.follow().await.map_err(std::io::Error::other)?;
    let router = crate::http::router(service.clone());
    let closing = service.clone();
    let limits = service.config().listener;
    let result = platform::serve::serve(listener, router, limits, async move {
        shutdown.await;
        closing.inner.hub.close_all(close::GOING_AWAY);
    })
    .await;
    // Upgraded connections are not tracked by the HTTP server: wait for them here.
    service.inner.hub.close_all(close::GOING_AWAY);
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    while !service.inner.hub.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    followers.iter().for_each(tokio::task::JoinHandle::abort);
    result
}
