//! An in-memory read-through cache in front of the store, so validating a credential does not
//! touch the database on the hot path. The store stays the source of truth: a miss reads it,
//! every write through this layer drops what it changed, and events from other replicas (on
//! the bus) drop what they name. Entries also expire after [`ENTRY_TTL`] as a backstop, and
//! everything is dropped when the bus subscription reconnects, since events may have been lost.
//!
//! Refresh tokens and audit entries are never cached: rotation must always see the database.

use std::{
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use auth_contract::events::{self, Ids};
use futures::StreamExt;
use moka::sync::Cache;
use platform::bus::{BusMessage, EventBus};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    ApiKey, AuditEntry, CleanupReport, Client, ClientChange, NewAudit, PersonalAccessToken, RefreshToken, SdkSession,
    ServiceToken, Session, Store, StoreResult, User,
};
use auth_contract::role::Role;

/// Longest an entry lives without being dropped by a write or an event.
pub const ENTRY_TTL: Duration = Duration::from_secs(30);
const CAPACITY: u64 = 100_000;

fn cache<K, V>() -> Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder().max_capacity(CAPACITY).time_to_live(ENTRY_TTL).support_invalidation_closures().build()
}

pub struct CachedStore {
    inner: Arc<dyn Store>,
    /// Bumped by every invalidation. A read that started before an invalidation does not
    /// fill the cache, so a value loaded just before a write can never outlive it.
    epoch: AtomicU64,
    sessions: Cache<Uuid, Option<Session>>,
    sdk_sessions: Cache<Uuid, Option<SdkSession>>,
    users: Cache<Uuid, Option<User>>,
    revoked_jtis: Cache<String, bool>,
    pats: Cache<String, Option<PersonalAccessToken>>,
    keys_by_hash: Cache<String, Option<ApiKey>>,
    keys: Cache<Uuid, Option<ApiKey>>,
    clients: Cache<Uuid, Option<Client>>,
    service_tokens: Cache<String, Option<ServiceToken>>,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore").field("sessions", &self.sessions.entry_count()).finish_non_exhaustive()
    }
}

/// Reads through `cache`; errors are never cached, nor values loaded while an invalidation
/// happened.
async fn through<K, V, F>(epoch: &AtomicU64, cache: &Cache<K, V>, key: K, load: F) -> StoreResult<V>
where
    K: Hash + Eq + Send + Sync + Clone + 'static,
    V: Clone + Send + Sync + 'static,
    F: std::future::Future<Output = StoreResult<V>>,
{
    if let Some(hit) = cache.get(&key) {
        return Ok(hit);
    }
    let started = epoch.load(Ordering::Acquire);
    let value = load.await?;
    if epoch.load(Ordering::Acquire) == started {
        cache.insert(key.clone(), value.clone());
        // An invalidation between the check and the insert bumped the epoch before it
        // invalidated (and found nothing yet): seen here, the value leaves again, so the check
        // and the insert act as one.
        if epoch.load(Ordering::Acquire) != started {
            cache.invalidate(&key);
        }
    }
    Ok(value)
}

/// The ids that are UUIDs (every stored record's are).
fn uuids(ids: &[String]) -> Vec<Uuid> {
    ids.iter().filter_map(|id| Uuid::parse_str(id).ok()).collect()
}

impl CachedStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            epoch: AtomicU64::new(0),
            sessions: cache(),
            sdk_sessions: cache(),
            users: cache(),
            revoked_jtis: cache(),
            pats: cache(),
            keys_by_hash: cache(),
            keys: cache(),
            clients: cache(),
            service_tokens: cache(),
        }
    }

    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops everything (after a bus reconnect).
    pub fn clear(&self) {
        self.bump();
        self.sessions.invalidate_all();
        self.sdk_sessions.invalidate_all();
        self.users.invalidate_all();
        self.revoked_jtis.invalidate_all();
        self.pats.invalidate_all();
        self.keys_by_hash.invalidate_all();
        self.keys.invalidate_all();
        self.clients.invalidate_all();
        self.service_tokens.invalidate_all();
    }

    fn drop_sessions(&self, ids: &[Uuid]) {
        self.bump();
        for id in ids {
            self.sessions.invalidate(id);
            self.sdk_sessions.invalidate(id);
        }
    }

    fn drop_pat(&self, id: Uuid) {
        self.bump();
        let _ = self.pats.invalidate_entries_if(move |_, v| v.as_ref().is_some_and(|p| p.id == id));
    }

    fn drop_key(&self, id: Uuid) {
        self.bump();
        self.keys.invalidate(&id);
        let _ = self.keys_by_hash.invalidate_entries_if(move |_, v| v.as_ref().is_some_and(|k| k.id == id));
    }

    fn drop_client(&self, id: Uuid) {
        self.bump();
        self.bump();
        self.clients.invalidate(&id);
        let _ = self.keys.invalidate_entries_if(move |_, v| v.as_ref().is_some_and(|k| k.client_id == id));
        let _ = self.keys_by_hash.invalidate_entries_if(move |_, v| v.as_ref().is_some_and(|k| k.client_id == id));
    }

    /// Drops whatever an event names (sessions, users, credentials and `jti`s, clients):
    /// any event, since activity, passwords and rotations change records too.
    pub fn apply_event(&self, payload: &str) {
        let Ok(event) = serde_json::from_str::<Value>(payload) else {
            return;
        };
        let named = Ids::named_in(&event);
        self.bump();
        self.drop_sessions(&uuids(&named.sessions));
        for user in uuids(&named.users) {
            self.users.invalidate(&user);
        }
        if let Some(jti) = events::jti(&event) {
            self.revoked_jtis.invalidate(&jti);
        }
        for credential in uuids(&named.credentials) {
            self.drop_pat(credential);
            self.drop_key(credential);
        }
        for client in uuids(&named.clients) {
            self.drop_client(client);
        }
    }

    /// Keeps the cache current from the bus until the subscription ends.
    pub async fn follow(
        self: Arc<Self>,
        bus: Arc<dyn EventBus>,
    ) -> Result<tokio::task::JoinHandle<()>, platform::Unavailable> {
        let mut events = bus.subscribe(&[events::ALL]).await?;
        Ok(tokio::spawn(async move {
            while let Some(message) = events.next().await {
                match message {
                    BusMessage::Event(event) => self.apply_event(&event.payload),
                    BusMessage::Resubscribed => self.clear(),
                }
            }
        }))
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }

    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        self.inner.insert_user(user).await?;
        self.bump();
        self.users.invalidate(&user.id);
        Ok(())
    }

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        through(&self.epoch, &self.users, id, self.inner.user_by_id(id)).await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        self.inner.user_by_email(email).await
    }

    async fn set_password_hash(&self, user_id: Uuid, hash: &str, at: OffsetDateTime) -> StoreResult<()> {
        self.inner.set_password_hash(user_id, hash, at).await?;
        self.bump();
        self.users.invalidate(&user_id);
        Ok(())
    }

    async fn list_users(&self, after: Option<(i64, Uuid)>, limit: u32) -> StoreResult<Vec<User>> {
        self.inner.list_users(after, limit).await
    }

    async fn set_user_disabled(&self, id: Uuid, disabled: bool, at: OffsetDateTime) -> StoreResult<bool> {
        let done = self.inner.set_user_disabled(id, disabled, at).await?;
        self.bump();
        self.users.invalidate(&id);
        Ok(done)
    }

    async fn set_user_role(&self, id: Uuid, role: Role, at: OffsetDateTime) -> StoreResult<bool> {
        let done = self.inner.set_user_role(id, role, at).await?;
        self.bump();
        self.users.invalidate(&id);
        Ok(done)
    }

    async fn insert_session(&self, session: &Session, refresh: &RefreshToken) -> StoreResult<()> {
        self.inner.insert_session(session, refresh).await?;
        self.bump();
        self.sessions.invalidate(&session.id);
        Ok(())
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        through(&self.epoch, &self.sessions, id, self.inner.session(id)).await
    }

    async fn live_sessions(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<Vec<Session>> {
        self.inner.live_sessions(user_id, now, idle_cutoff).await
    }

    async fn count_live_sessions(&self, now: OffsetDateTime, idle_cutoff: OffsetDateTime) -> StoreResult<i64> {
        self.inner.count_live_sessions(now, idle_cutoff).await
    }

    async fn touch_session(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
        self.inner.touch_session(id, at).await?;
        self.bump();
        self.sessions.invalidate(&id);
        Ok(())
    }

    async fn end_sessions(&self, ids: &[Uuid], at: OffsetDateTime, reason: &str) -> StoreResult<Vec<Uuid>> {
        let result = self.inner.end_sessions(ids, at, reason).await;
        self.drop_sessions(ids);
        result
    }

    async fn refresh_token_by_hash(&self, hash: &str) -> StoreResult<Option<RefreshToken>> {
        self.inner.refresh_token_by_hash(hash).await
    }

    async fn rotate_refresh_token(&self, old: Uuid, spent_at: OffsetDateTime, new: &RefreshToken) -> StoreResult<bool> {
        let done = self.inner.rotate_refresh_token(old, spent_at, new).await?;
        self.drop_sessions(&[new.session_id]);
        Ok(done)
    }

    async fn insert_pat(&self, pat: &PersonalAccessToken) -> StoreResult<()> {
        self.inner.insert_pat(pat).await?;
        self.bump();
        self.pats.invalidate(&pat.token_hash);
        Ok(())
    }

    async fn pat_by_hash(&self, hash: &str) -> StoreResult<Option<PersonalAccessToken>> {
        through(&self.epoch, &self.pats, hash.to_owned(), self.inner.pat_by_hash(hash)).await
    }

    async fn pats_for_user(&self, user_id: Uuid) -> StoreResult<Vec<PersonalAccessToken>> {
        self.inner.pats_for_user(user_id).await
    }

    async fn revoke_pat(&self, user_id: Uuid, id: Uuid, at: OffsetDateTime) -> StoreResult<bool> {
        let done = self.inner.revoke_pat(user_id, id, at).await?;
        self.drop_pat(id);
        Ok(done)
    }

    async fn touch_pat(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
        self.inner.touch_pat(id, at).await?;
        self.drop_pat(id);
        Ok(())
    }

    async fn insert_client(&self, client: &Client, key: &ApiKey) -> StoreResult<()> {
        self.inner.insert_client(client, key).await?;
        self.drop_client(client.id);
        Ok(())
    }

    async fn client(&self, id: Uuid) -> StoreResult<Option<Client>> {
        through(&self.epoch, &self.clients, id, self.inner.client(id)).await
    }

    async fn clients_for_owner(&self, owner_id: Uuid) -> StoreResult<Vec<Client>> {
        self.inner.clients_for_owner(owner_id).await
    }

    async fn update_client(&self, id: Uuid, change: &ClientChange, at: OffsetDateTime) -> StoreResult<()> {
        let result = self.inner.update_client(id, change, at).await;
        self.bump();
        self.clients.invalidate(&id);
        result
    }

    async fn all_allowed_origins(&self) -> StoreResult<Vec<String>> {
        self.inner.all_allowed_origins().await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        self.inner.insert_api_key(key).await?;
        self.drop_key(key.id);
        self.bump();
        self.keys_by_hash.invalidate(&key.key_hash);
        Ok(())
    }

    async fn api_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>> {
        through(&self.epoch, &self.keys, id, self.inner.api_key(id)).await
    }

    async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        through(&self.epoch, &self.keys_by_hash, hash.to_owned(), self.inner.api_key_by_hash(hash)).await
    }

    async fn api_keys_for_client(&self, client_id: Uuid) -> StoreResult<Vec<ApiKey>> {
        self.inner.api_keys_for_client(client_id).await
    }

    async fn rotate_api_key(&self, old: Uuid, grace_until: OffsetDateTime, new: &ApiKey) -> StoreResult<bool> {
        let done = self.inner.rotate_api_key(old, grace_until, new).await?;
        self.drop_key(old);
        self.bump();
        self.keys_by_hash.invalidate(&new.key_hash);
        Ok(done)
    }

    async fn revoke_api_key(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<bool> {
        let done = self.inner.revoke_api_key(id, at).await?;
        self.drop_key(id);
        Ok(done)
    }

    async fn touch_api_key(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
        self.inner.touch_api_key(id, at).await?;
        self.drop_key(id);
        Ok(())
    }

    async fn insert_sdk_session(&self, session: &SdkSession, refresh: &RefreshToken) -> StoreResult<()> {
        self.inner.insert_sdk_session(session, refresh).await?;
        self.bump();
        self.sdk_sessions.invalidate(&session.id);
        Ok(())
    }

    async fn sdk_session(&self, id: Uuid) -> StoreResult<Option<SdkSession>> {
        through(&self.epoch, &self.sdk_sessions, id, self.inner.sdk_session(id)).await
    }

    async fn touch_sdk_session(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
        self.inner.touch_sdk_session(id, at).await?;
        self.bump();
        self.sdk_sessions.invalidate(&id);
        Ok(())
    }

    async fn end_sdk_session(&self, id: Uuid, at: OffsetDateTime, reason: &str) -> StoreResult<bool> {
        let result = self.inner.end_sdk_session(id, at, reason).await;
        self.bump();
        self.sdk_sessions.invalidate(&id);
        result
    }

    async fn end_sdk_sessions_for_keys(
        &self,
        key_ids: &[Uuid],
        at: OffsetDateTime,
        reason: &str,
    ) -> StoreResult<Vec<Uuid>> {
        let ended = self.inner.end_sdk_sessions_for_keys(key_ids, at, reason).await?;
        self.drop_sessions(&ended);
        Ok(ended)
    }

    async fn insert_service_token(&self, token: &ServiceToken) -> StoreResult<()> {
        self.inner.insert_service_token(token).await?;
        self.bump();
        self.service_tokens.invalidate(&token.token_hash);
        Ok(())
    }

    async fn service_token_by_hash(&self, hash: &str) -> StoreResult<Option<ServiceToken>> {
        through(&self.epoch, &self.service_tokens, hash.to_owned(), self.inner.service_token_by_hash(hash)).await
    }

    /// Uncached: only the rare re-checks of a service's context ask by id.
    async fn service_token(&self, id: Uuid) -> StoreResult<Option<ServiceToken>> {
        self.inner.service_token(id).await
    }

    async fn revoke_jti(&self, jti: &str, expires_at: OffsetDateTime) -> StoreResult<()> {
        self.inner.revoke_jti(jti, expires_at).await?;
        self.revoked_jtis.insert(jti.to_owned(), true);
        Ok(())
    }

    async fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool> {
        through(&self.epoch, &self.revoked_jtis, jti.to_owned(), self.inner.is_jti_revoked(jti)).await
    }

    async fn insert_audit(&self, entry: &NewAudit) -> StoreResult<()> {
        self.inner.insert_audit(entry).await
    }

    async fn audit_for_user(&self, user_id: Uuid, before: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        self.inner.audit_for_user(user_id, before, limit).await
    }

    async fn cleanup(
        &self,
        now: OffsetDateTime,
        ended_before: OffsetDateTime,
        dry_run: bool,
    ) -> StoreResult<CleanupReport> {
        let report = self.inner.cleanup(now, ended_before, dry_run).await?;
        if !dry_run {
            self.clear();
        }
        Ok(report)
    }
}
