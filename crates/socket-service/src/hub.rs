//! The local connection registry of one socket node: who is connected, to which channels,
//! fan-out of messages to them, and closing them when their session or credential is
//! revoked. Every node holds only its own connections; the bus brings every node the same
//! events, so each closes its own share.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use auth_contract::{
    AuthContext,
    events::{self, Revocation},
};
use axum::extract::ws::Utf8Bytes;
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

use crate::{
    metrics::Metrics,
    protocol::{self, ServerMessage, close},
};

/// Outbound messages queued per connection before further ones are dropped.
const OUTBOUND_QUEUE: usize = 32;

pub type ConnId = u64;

/// One open connection, shared by its task and the hub.
pub struct Conn {
    pub id: ConnId,
    /// The id under which the context is stored (`ws:conn:{key}`).
    pub key: String,
    pub ip: Option<IpAddr>,
    pub origin: Option<String>,
    /// Unix seconds.
    pub connected_at: i64,
    /// The validated context, replaced by a refresh; no credential is ever kept: the
    /// connection is re-checked by the context's ids (`CheckContext`).
    context: RwLock<Arc<AuthContext>>,
    outbound: mpsc::Sender<Utf8Bytes>,
    close: Mutex<Option<u16>>,
    wake: Notify,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("id", &self.id).field("key", &self.key).finish_non_exhaustive()
    }
}

impl Conn {
    pub fn context(&self) -> Arc<AuthContext> {
        self.context.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks the connection's task to close with `code`; the first request wins.
    pub fn request_close(&self, code: u16) -> bool {
        let mut slot = self.close.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return false;
        }
        *slot = Some(code);
        drop(slot);
        // `notify_one` keeps a permit when the task is busy, so the request is never missed.
        self.wake.notify_one();
        true
    }

    /// The close code requested, if any.
    pub fn close_requested(&self) -> Option<u16> {
        *self.close.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes when a close is requested.
    pub async fn closing(&self) {
        loop {
            if self.close_requested().is_some() {
                return;
            }
            self.wake.notified().await;
        }
    }

    /// Queues a text message; a client that does not keep up loses it (and it is counted).
    fn push(&self, text: Utf8Bytes, metrics: &Metrics) {
        if self.outbound.try_send(text).is_err() {
            metrics.dropped.inc();
        }
    }
}

#[derive(Default)]
struct Registry {
    conns: HashMap<ConnId, Arc<Conn>>,
    /// Connections by their owner's id (see [`protocol::own_id`]).
    owners: HashMap<String, HashSet<ConnId>>,
    /// Connections by tenant.
    tenants: HashMap<String, HashSet<ConnId>>,
    /// Connections by subscribed channel.
    channels: HashMap<String, HashSet<ConnId>>,
    /// Channels per connection, to clean up on close.
    subscriptions: HashMap<ConnId, HashSet<String>>,
    closing: bool,
}

fn index_remove(index: &mut HashMap<String, HashSet<ConnId>>, key: &str, id: ConnId) {
    if let Some(set) = index.get_mut(key) {
        set.remove(&id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// How long a node remembers the revocations it received: longer than a ticket lives and
/// than any validation takes, so whatever was validated before a revocation and arrives
/// after it is still caught.
pub const RECENT_REVOCATIONS: std::time::Duration = std::time::Duration::from_secs(60);
/// Entries kept at most (a burst of revocations beyond it drops the oldest ones first).
const MAX_RECENT_REVOCATIONS: usize = 100_000;

pub struct Hub {
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    metrics: Metrics,
    /// The revocations of the last minute, oldest first (SPEC §7's ring).
    recent: Mutex<std::collections::VecDeque<(tokio::time::Instant, Revocation)>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("connections", &self.len()).finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            registry: RwLock::new(Registry::default()),
            next_id: AtomicU64::new(1),
            metrics,
            recent: Mutex::default(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.read().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open connection, for re-validation.
    pub fn connections(&self) -> Vec<Arc<Conn>> {
        self.read().conns.values().cloned().collect()
    }

    /// Registers a connection; `None` once the node is shutting down.
    pub fn register(
        &self,
        key: String,
        context: Arc<AuthContext>,
        ip: Option<IpAddr>,
        origin: Option<String>,
        connected_at: i64,
    ) -> Option<(Arc<Conn>, mpsc::Receiver<Utf8Bytes>)> {
        let (outbound, receiver) = mpsc::channel(OUTBOUND_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let owner = protocol::own_id(&context).map(str::to_owned);
        let tenant = context.tenant_id.clone();
        let conn = Arc::new(Conn {
            id,
            key,
            ip,
            origin,
            connected_at,
            context: RwLock::new(context),
            outbound,
            close: Mutex::new(None),
            wake: Notify::new(),
        });
        let mut registry = self.write();
        if registry.closing {
            return None;
        }
        registry.conns.insert(id, conn.clone());
        if let Some(owner) = owner {
            registry.owners.entry(owner).or_default().insert(id);
        }
        if let Some(tenant) = tenant {
            registry.tenants.entry(tenant).or_default().insert(id);
        }
        drop(registry);
        self.metrics.connections_open.inc();
        self.metrics.connections_total.inc();
        // A revocation that arrived between this context's validation and now found nothing
        // to close; the ring still names it. (A revocation recorded after this check finds the
        // connection in the registry, so none falls between the two.)
        if self.revoked_recently(&conn.context()) {
            conn.request_close(close::SESSION_ENDED);
        }
        Some((conn, receiver))
    }

    pub fn unregister(&self, conn: &Conn) {
        let context = conn.context();
        let mut registry = self.write();
        if registry.conns.remove(&conn.id).is_none() {
            return;
        }
        if let Some(owner) = protocol::own_id(&context) {
            index_remove(&mut registry.owners, owner, conn.id);
        }
        if let Some(tenant) = context.tenant_id.as_deref() {
            index_remove(&mut registry.tenants, tenant, conn.id);
        }
        for channel in registry.subscriptions.remove(&conn.id).unwrap_or_default() {
            index_remove(&mut registry.channels, &channel, conn.id);
        }
        drop(registry);
        self.metrics.connections_open.dec();
    }

    pub fn subscribe(&self, conn: &Conn, channel: &str) {
        let mut registry = self.write();
        if !registry.conns.contains_key(&conn.id) {
            return;
        }
        registry.channels.entry(channel.to_owned()).or_default().insert(conn.id);
        registry.subscriptions.entry(conn.id).or_default().insert(channel.to_owned());
    }

    pub fn unsubscribe(&self, conn: &Conn, channel: &str) {
        let mut registry = self.write();
        index_remove(&mut registry.channels, channel, conn.id);
        if let Some(set) = registry.subscriptions.get_mut(&conn.id) {
            set.remove(channel);
        }
    }

    /// Channels a connection subscribed to.
    pub fn subscriptions(&self, conn: &Conn) -> usize {
        self.read().subscriptions.get(&conn.id).map_or(0, HashSet::len)
    }

    /// Replaces a connection's context after a refresh. The owner and tenant cannot change
    /// (the caller checks), so the indexes stay as they are.
    pub fn update(&self, conn: &Conn, context: Arc<AuthContext>) {
        *conn.context.write().unwrap_or_else(|p| p.into_inner()) = context;
    }

    fn message(channel: &str, data: &Value) -> Utf8Bytes {
        Utf8Bytes::from(ServerMessage::Message { channel, data }.to_json())
    }

    fn deliver(&self, ids: Option<&HashSet<ConnId>>, registry: &Registry, text: &Utf8Bytes) -> usize {
        let mut delivered = 0;
        for id in ids.into_iter().flatten() {
            if let Some(conn) = registry.conns.get(id) {
                conn.push(text.clone(), &self.metrics);
                delivered += 1;
            }
        }
        delivered
    }

    /// Sends `data` on `user:{owner}` to every local connection of that owner (the own channel
    /// needs no subscription).
    pub fn to_owner(&self, owner: &str, data: &Value) -> usize {
        let text = Self::message(&protocol::user_channel(owner), data);
        let registry = self.read();
        self.deliver(registry.owners.get(owner), &registry, &text)
    }

    /// Sends `data` on `tenant:{tenant}` to every local connection of that tenant.
    pub fn to_tenant(&self, tenant: &str, data: &Value) -> usize {
        let text = Self::message(&protocol::tenant_channel(tenant), data);
        let registry = self.read();
        self.deliver(registry.tenants.get(tenant), &registry, &text)
    }

    /// Sends `data` to every local subscriber of `channel`; `user:{id}` also reaches that
    /// owner's connections, which are always subscribed to their own channel.
    pub fn to_channel(&self, channel: &str, data: &Value) -> usize {
        let text = Self::message(channel, data);
        let registry = self.read();
        let mut ids: HashSet<ConnId> = registry.channels.get(channel).cloned().unwrap_or_default();
        if let Some(owner) = channel.strip_prefix("user:")
            && let Some(owned) = registry.owners.get(owner)
        {
            ids.extend(owned);
        }
        self.deliver(Some(&ids), &registry, &text)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(tokio::time::Instant, Revocation)>> {
        self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a revocation of the last minute names this context.
    pub fn revoked_recently(&self, context: &AuthContext) -> bool {
        let now = tokio::time::Instant::now();
        let mut recent = self.recent();
        while recent.front().is_some_and(|(at, _)| now.duration_since(*at) > RECENT_REVOCATIONS) {
            recent.pop_front();
        }
        recent.iter().any(|(_, revocation)| revocation.ends(context))
    }

    /// Closes every local connection a revocation names with 4409, after remembering it for
    /// the contexts that are being validated or redeemed right now.
    pub fn revoke(&self, revocation: &Revocation) -> usize {
        if revocation.ended.is_empty() {
            return 0;
        }
        {
            let mut recent = self.recent();
            if recent.len() >= MAX_RECENT_REVOCATIONS {
                recent.pop_front();
            }
            recent.push_back((tokio::time::Instant::now(), revocation.clone()));
        }
        let mut closed = 0;
        for conn in self.read().conns.values() {
            if revocation.ends(&conn.context()) && conn.request_close(close::SESSION_ENDED) {
                closed += 1;
            }
        }
        self.metrics.revocations.inc_by(u64::try_from(closed).unwrap_or(0));
        closed
    }

    /// Refuses new connections and asks every open one to close with `code`.
    pub fn close_all(&self, code: u16) {
        let mut registry = self.write();
        registry.closing = true;
        for conn in registry.conns.values() {
            conn.request_close(code);
        }
    }

    /// Applies one `auth:*` event: account events go to the user's connections (before any
    /// close, so a device sees why), then the connections it ends close.
    pub fn apply_auth_event(&self, channel: &str, payload: &str, now: time::OffsetDateTime) {
        let mut event = match serde_json::from_str::<Value>(payload) {
            Ok(event @ Value::Object(_)) => event,
            _ => {
                tracing::warn!(%channel, "auth event is not a JSON object; ignored");
                return;
            }
        };
        let revocation = Revocation::from_value(channel, &event);
        if events::is_account_event(channel)
            && let Some(user) = event.get("user_id").and_then(Value::as_str).map(str::to_owned)
        {
            if let Value::Object(fields) = &mut event {
                fields.insert("event".to_owned(), Value::String(channel.to_owned()));
            }
            self.to_owner(&user, &event);
        }
        if let Some(revocation) = revocation.filter(|r| !r.ended.is_empty()) {
            self.revoke(&revocation);
            self.observe_lag(&event, now);
        }
    }

    /// Records how long after its `occurred_at` a revocation was applied here (an event
    /// without a readable one, or from a clock ahead of this one, counts as no lag).
    fn observe_lag(&self, event: &Value, now: time::OffsetDateTime) {
        let occurred = event
            .get("occurred_at")
            .and_then(Value::as_str)
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok());
        let lag = occurred.map_or(0.0, |at| (now - at).as_seconds_f64().max(0.0));
        self.metrics.revocation_lag.observe(lag);
    }
}

#[cfg(test)]
mod tests {
    use auth_contract::Kind;
    use serde_json::json;

    use super::*;

    fn context(user: &str, session: &str, credential: &str) -> Arc<AuthContext> {
        Arc::new(AuthContext {
            subject: user.into(),
            kind: Kind::User,
            user_id: Some(user.into()),
            tenant_id: None,
            client_id: None,
            session_id: Some(session.into()),
            credential_id: Some(credential.into()),
            role: None,
            scopes: auth_contract::scope::Scopes::all(),
            expires_at: None,
            rate_limit: None,
        })
    }

    #[tokio::test]
    async fn revoke_closes_only_matching_connections() {
        let hub = Hub::new(Metrics::new().unwrap());
        let (a, _ra) = hub.register("a".into(), context("u1", "s1", "j1"), None, None, 0).unwrap();
        let (b, mut rb) = hub.register("b".into(), context("u1", "s2", "j2"), None, None, 0).unwrap();
        let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000);
        let event = r#"{"user_id":"u1","session_id":"s1","jti":"j1","occurred_at":"2027-01-15T07:40:00Z"}"#;
        hub.apply_auth_event("auth:user.logout", event, now);
        assert_eq!(a.close_requested(), Some(close::SESSION_ENDED));
        assert_eq!(b.close_requested(), None);
        let synced: Value = serde_json::from_str(rb.try_recv().unwrap().as_str()).unwrap();
        assert_eq!(synced["channel"], "user:u1");
        assert_eq!(synced["data"]["event"], "auth:user.logout");
        assert_eq!(synced["data"]["session_id"], "s1");
        // `now` is 2027-01-15T08:00:00Z: applied 20 minutes after it occurred.
        assert_eq!(hub.metrics.revocation_lag.get_sample_count(), 1);
        assert!((hub.metrics.revocation_lag.get_sample_sum() - 1_200.0).abs() < 1e-6);
        hub.unregister(&a);
        hub.unregister(&b);
        assert!(hub.is_empty());
    }

    #[tokio::test]
    async fn channels_and_shutdown() {
        let hub = Hub::new(Metrics::new().unwrap());
        let (a, mut ra) = hub.register("a".into(), context("u1", "s1", "j1"), None, None, 0).unwrap();
        hub.subscribe(&a, "tenant:t:news");
        assert_eq!(hub.to_channel("tenant:t:news", &json!(1)), 1);
        assert_eq!(hub.to_channel("user:u1", &json!(2)), 1);
        hub.unsubscribe(&a, "tenant:t:news");
        assert_eq!(hub.to_channel("tenant:t:news", &json!(3)), 0);
        assert!(ra.try_recv().is_ok() && ra.try_recv().is_ok() && ra.try_recv().is_err());
        hub.close_all(close::GOING_AWAY);
        assert_eq!(a.close_requested(), Some(close::GOING_AWAY));
        assert!(hub.register("c".into(), context("u2", "s", "j"), None, None, 0).is_none());
    }
}
