//! The socket service handle the handlers and connection tasks share: its dependencies (Redis
//! or in-process stores and bus), publishing to every node, and re-checking open connections
//! (`CheckContext`). It knows nothing of HTTP; `app` wires it to the listener and the bus.

use std::{collections::HashMap, sync::Arc};

use auth_contract::{AuthClient, ClientConfig, ClientError, ContextRef, ErrorCode, Liveness, headers::ContextKey};
use axum::extract::FromRef;
use platform::{
    Unavailable,
    bus::{EventBus, MemoryBus, RedisBus},
    clock::{Clock, SystemClock},
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    config::SocketConfig,
    hub::{Conn, Hub},
    metrics::Metrics,
    protocol::close,
    store::{ContextStore, MemoryContextStore, MemoryTicketStore, RedisContextStore, RedisTicketStore, TicketStore},
};

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
        let context_key = ContextKey::with_previous(
            config.context_signing_secret.expose_secret(),
            config.context_signing_previous_secrets.iter().map(|s| s.expose_secret()),
        );
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

    pub(crate) fn deliver(&self, payload: &str) {
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

    /// What a bus reconnect calls for: events may have been lost, so the contract client's
    /// cache (fed by the same events) is dropped and every open connection re-checked at once.
    /// Returns how many connections closed.
    pub async fn revalidate_all(&self) -> usize {
        self.inner.auth.clear();
        let closed = self.recheck().await;
        tracing::info!(closed, "open connections re-checked after a bus reconnect");
        closed
    }

    /// Asks the auth service whether every open connection's context is still live
    /// (`CheckContext`, by the context's ids: no credential is kept), Bearer, ticket and API-key
    /// connections alike; connections that share a context are asked about once. An ended
    /// context closes its connections (4401 when it merely expired, 4409 otherwise). Runs every
    /// `SOCKET_RECHECK_INTERVAL` and after every bus reconnect. An unreachable auth service
    /// leaves connections as they are: their contexts were valid, and events, expiry and the
    /// next re-check still apply. Returns how many connections it closed.
    pub(crate) async fn recheck(&self) -> usize {
        let mut by_context: HashMap<ContextRef, Vec<Arc<Conn>>> = HashMap::new();
        for conn in self.inner.hub.connections() {
            by_context.entry(conn.context().reference()).or_default().push(conn);
        }
        let (refs, conns): (Vec<ContextRef>, Vec<Vec<Arc<Conn>>>) = by_context.into_iter().unzip();
        let metrics = &self.inner.metrics;
        let answers = match self.inner.auth.check_contexts(&refs).await {
            Ok(answers) => answers,
            Err(err) => {
                metrics.rechecks.with_label_values(&["unavailable"]).inc_by(refs.len() as u64);
                tracing::warn!(error = %err, contexts = refs.len(), "connections not re-checked: auth service unavailable");
                return 0;
            }
        };
        let mut closed = 0;
        for (liveness, conns) in answers.into_iter().zip(conns) {
            let Liveness::Ended(code) = liveness else {
                metrics.rechecks.with_label_values(&["live"]).inc();
                continue;
            };
            metrics.rechecks.with_label_values(&["ended"]).inc();
            let close = if code == ErrorCode::TokenExpired { close::EXPIRED } else { close::SESSION_ENDED };
            for conn in conns {
                if conn.request_close(close) {
                    closed += 1;
                    if close == close::SESSION_ENDED {
                        metrics.revocations.inc();
                    }
                }
            }
        }
        tracing::debug!(contexts = refs.len(), closed, "open connections re-checked");
        closed
    }
}
