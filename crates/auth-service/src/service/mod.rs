//! The auth service's operations, independent of any transport: the HTTP routes (and later
//! the gRPC service) call these and only translate inputs and errors.

pub mod admin;
mod clients;
mod credentials;
mod identity;
pub mod import;
pub mod internal;
mod limits;
mod sdk;
pub mod sessions;
mod tokens;

use std::{net::IpAddr, sync::Arc, time::Duration};

use platform::{bus::EventBus, clock::Clock, counters::Counters};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    config::AuthConfig,
    domain::{jwt::KeyRing, password::Hasher},
    error::Error,
    events::Events,
    metrics::Metrics,
    store::{CleanupReport, NewAudit, Session, Store, User},
};

pub use clients::NewApiKey;
pub use credentials::{MAX_PAT_DAYS, UserPrincipal};
pub use internal::Validated;
pub use sdk::SdkTokens;
pub use tokens::{IssuedTokens, Principal, Refreshed};

/// How long ended sessions are kept (for the sessions list and audit context) before cleanup.
pub const ENDED_SESSION_RETENTION: time::Duration = time::Duration::days(1);

/// Where a request came from, as the transport saw it.
#[derive(Debug, Clone)]
pub struct ClientMeta {
    pub ip: IpAddr,
    pub user_agent: Option<String>,
}

/// The dependencies a service instance runs on, injected so tests choose backends and clock.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    pub counters: Arc<dyn Counters>,
    pub clock: Arc<dyn Clock>,
}

struct Inner {
    /// `AUTH_FAILURE_LIMIT` for credentials presented on the HTTP routes.
    auth_failures: platform::counters::FailureGuard,
    config: AuthConfig,
    context_key: auth_contract::headers::ContextKey,
    deps: Deps,
    keys: KeyRing,
    hasher: Hasher,
    events: Events,
    metrics: Metrics,
}

/// Cheap to clone; every clone shares one state.
#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").field("keys", &self.inner.keys).finish_non_exhaustive()
    }
}

/// A signed-in user's successful signup or login.
#[derive(Debug)]
pub struct SignedIn {
    pub user: User,
    pub tokens: IssuedTokens,
}

impl AuthService {
    pub fn new(config: AuthConfig, deps: Deps) -> Result<Self, Error> {
        let metrics = Metrics::new().map_err(Error::internal)?;
        let timer_metrics = metrics.clone();
        let hasher = Hasher::new(
            config.password_hash_concurrency,
            config.password_hash_queue,
            Arc::new(move |elapsed: Duration| timer_metrics.password_hash_duration.observe(elapsed.as_secs_f64())),
        )?;
        let keys =
            KeyRing::new(&config.jwt.secret, &config.jwt.previous_secrets, &config.jwt.issuer, &config.jwt.audience);
        let events = Events::new(deps.bus.clone(), deps.clock.clone());
        let context_key = {
            use secrecy::ExposeSecret;
            auth_contract::headers::ContextKey::new(config.context_signing_secret.expose_secret())
        };
        let auth_failures =
            platform::counters::FailureGuard::new(Some(deps.counters.clone()), config.auth_failure_limit);
        Ok(Self { inner: Arc::new(Inner { auth_failures, config, context_key, deps, keys, hasher, events, metrics }) })
    }

    /// Runs `check` on a credential presented from `ip` under `AUTH_FAILURE_LIMIT`: a
    /// reservation is taken first (429 when the IP has used them all) and given back unless
    /// the credential is refused as invalid.
    pub async fn limit_failures<T>(
        &self,
        ip: IpAddr,
        check: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let guard = &self.inner.auth_failures;
        let admitted = guard.admit(ip).await.map_err(|retry_after| Error::RateLimited { retry_after })?;
        let result = check.await;
        if !result.as_ref().is_err_and(Error::is_bad_credential) {
            guard.refund(admitted).await;
        }
        result
    }

    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Signs the context headers of the forward-auth mirrors.
    pub fn context_key(&self) -> &auth_contract::headers::ContextKey {
        &self.inner.context_key
    }

    /// What the password hasher is doing (running, peak, started), for metrics and tests.
    pub fn password_hashes(&self) -> crate::domain::password::HashStats {
        self.inner.hasher.stats().clone()
    }

    pub fn key_ring(&self) -> &KeyRing {
        &self.inner.keys
    }

    fn store(&self) -> &dyn Store {
        self.inner.deps.store.as_ref()
    }

    fn events(&self) -> &Events {
        &self.inner.events
    }

    pub fn now(&self) -> OffsetDateTime {
        self.inner.deps.clock.now()
    }

    /// The instant before which a session without activity is idle.
    fn idle_cutoff(&self, now: OffsetDateTime) -> OffsetDateTime {
        now - self.inner.config.session_idle_timeout
    }

    /// Readiness: the database and the bus answer.
    pub async fn ready(&self) -> Result<(), Error> {
        self.store().ping().await?;
        self.inner.deps.bus.ping().await?;
        Ok(())
    }

    /// The Prometheus exposition, with the live-session gauge read from the store.
    pub async fn render_metrics(&self) -> String {
        let now = self.now();
        match self.store().count_live_sessions(now, self.idle_cutoff(now)).await {
            Ok(n) => self.inner.metrics.active_sessions.set(n),
            Err(err) => tracing::warn!(error = %err, "could not count live sessions"),
        }
        let (pending, dropped, failures) = self.events().backlog();
        let metrics = &self.inner.metrics;
        metrics.event_publish_failures.inc_by(failures.saturating_sub(metrics.event_publish_failures.get()));
        metrics.events_pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
        metrics.events_dropped.set(i64::try_from(dropped).unwrap_or(i64::MAX));
        metrics.password_hashes_running.set(i64::try_from(self.inner.hasher.stats().running()).unwrap_or(i64::MAX));
        self.inner.metrics.render()
    }

    /// Records a security event; failures are logged, never surfaced to the caller.
    async fn audit(
        &self,
        user_id: Option<Uuid>,
        action: &'static str,
        outcome: &'static str,
        ip: Option<IpAddr>,
        detail: Value,
    ) {
        let entry = NewAudit { user_id, action, outcome, ip: ip.map(|ip| ip.to_string()), detail, at: self.now() };
        if let Err(err) = self.store().insert_audit(&entry).await {
            tracing::error!(error = %err, action, "audit entry not written");
        }
    }

    /// Ends sessions and announces each on the bus; returns the ids that were live.
    async fn end_sessions(&self, ids: &[Uuid], reason: &'static str, user_id: Uuid) -> Result<Vec<Uuid>, Error> {
        let ended = self.store().end_sessions(ids, self.now(), reason).await?;
        for id in &ended {
            self.events()
                .emit(
                    crate::events::SESSION_TERMINATED,
                    serde_json::json!({"user_id": user_id, "session_id": id, "reason": reason}),
                )
                .await;
        }
        Ok(ended)
    }

    /// Deletes what can never be used again (expired sessions, tokens, revocations).
    pub async fn cleanup(&self, dry_run: bool) -> Result<CleanupReport, Error> {
        let now = self.now();
        Ok(self.store().cleanup(now, now - ENDED_SESSION_RETENTION, dry_run).await?)
    }

    /// Runs [`Self::cleanup`] every `CLEANUP_INTERVAL` until `shutdown` resolves.
    pub fn spawn_cleanup(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        let every = self.inner.config.cleanup_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    () = &mut shutdown => return,
                    _ = ticker.tick() => match service.cleanup(false).await {
                        Ok(report) => tracing::info!(?report, "cleanup done"),
                        Err(err) => tracing::warn!(error = %err, "cleanup failed"),
                    },
                }
            }
        })
    }
}

/// Whether a session (user or SDK) is usable at `now`; the error says why not.
/// A configured duration as a `time` duration (saturating).
pub(super) fn secs(d: std::time::Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

fn check_lifetime(
    ended_at: Option<OffsetDateTime>,
    expires_at: OffsetDateTime,
    last_activity: OffsetDateTime,
    now: OffsetDateTime,
    idle_cutoff: OffsetDateTime,
) -> Result<(), Error> {
    if ended_at.is_some() || expires_at <= now {
        return Err(Error::SessionEnded);
    }
    if last_activity <= idle_cutoff {
        return Err(Error::SessionIdle);
    }
    Ok(())
}

fn check_session(session: &Session, now: OffsetDateTime, idle_cutoff: OffsetDateTime) -> Result<(), Error> {
    check_lifetime(session.ended_at, session.expires_at, session.last_activity, now, idle_cutoff)
}
