//! [`AuthClient`]: how the gateway, the socket service and downstream services ask the auth
//! service, fast enough to sit in front of every request.
//!
//! - One pooled, multiplexed gRPC channel; a service token obtained with `SERVICE_SECRET` and
//!   renewed before it expires.
//! - A positive cache keyed by the SHA-256 of the credential and every other input of the
//!   decision (IP and origin where they matter), never the raw secret; entries live until the
//!   `cache_ttl_seconds` the auth service grants (at most 60 s, never past the credential's
//!   expiry or its session's idle deadline). Refusals are cached briefly (≈ 5 s).
//! - Concurrent identical validations are coalesced into one call.
//! - Entries are dropped by session, credential, user or client id when a revocation event
//!   arrives on the bus, and all of them when the subscription reconnects. A revocation is
//!   recorded once (a generation and what it names); each lookup checks its answer against the
//!   revocations recorded since that answer was last checked, so neither applying a
//!   revocation nor a lookup costs more as revocations accumulate.
//! - Each call has a timeout; idempotent calls are retried with jittered backoff; a circuit
//!   breaker fails fast while the auth service is down. Anything not cached then fails closed
//!   with [`ClientError::Unavailable`], which services answer with 503.

use std::{
    net::IpAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use failsafe::{StateMachine, failure_policy::ConsecutiveFailures};
use futures::StreamExt;
use moka::{Expiry, future::Cache};
use platform::bus::{BusMessage, EventBus};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Status, transport::Channel};

use crate::{
    AuthContext, ErrorCode,
    events::{self, Revocation},
    proto::{self, auth_internal_client::AuthInternalClient},
};

/// A refused validation in a batch: its code and the auth service's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// Tokens the auth service just issued (an SDK session, a refresh) and the context they carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds the access token lives.
    pub expires_in: i64,
    pub context: AuthContext,
}

impl Issued {
    /// An answer without a readable context is the auth service failing, not an answer.
    fn new(
        access_token: String,
        refresh_token: String,
        expires_in: i64,
        context: Option<&proto::AuthContext>,
    ) -> Result<Self, ClientError> {
        let context = context
            .and_then(AuthContext::from_proto)
            .ok_or_else(|| ClientError::Unavailable("the auth service answered without a context".to_owned()))?;
        Ok(Self { access_token, refresh_token, expires_in, context })
    }

    /// Unix seconds when the access token expires.
    pub fn expires_at(&self) -> i64 {
        self.context.expires_at.unwrap_or_default()
    }
}

/// What the client needs to reach the auth service.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `AUTH_SERVICE_URL`, e.g. `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// How this service names itself in its service token.
    pub service_name: String,
    pub service_secret: SecretString,
    /// Per attempt.
    pub timeout: Duration,
    /// Extra attempts for idempotent calls.
    pub retries: u32,
    pub cache_capacity: u64,
    pub negative_ttl: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before letting a trial call through.
    pub breaker_open_for: Duration,
}

impl ClientConfig {
    pub fn new(endpoint: impl Into<String>, service_name: impl Into<String>, service_secret: SecretString) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: service_name.into(),
            service_secret,
            timeout: Duration::from_secs(2),
            retries: 2,
            cache_capacity: 100_000,
            negative_ttl: Duration::from_secs(5),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The auth service refused the credential (or the request).
    #[error("{}: {message}", code.as_str_name())]
    Denied { code: ErrorCode, message: String },
    /// The auth service could not be asked; fail closed (503).
    #[error("auth service unavailable: {0}")]
    Unavailable(String),
}

impl ClientError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Denied { code, .. } => *code,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

/// A cached answer. An allowed one remembers up to which revocation generation it has been
/// checked (shared by its clones): a lookup checks it only against revocations applied since.
#[derive(Debug, Clone)]
enum Decision {
    Allowed { context: Arc<AuthContext>, ttl: Duration, checked: Arc<AtomicU64> },
    Denied { code: ErrorCode, message: Arc<str> },
}

/// What one generation dropped: a revocation, or everything (a flush).
#[derive(Debug)]
enum Revoked {
    Everything,
    Some(Revocation),
}

impl Revoked {
    fn matches(&self, context: &AuthContext) -> bool {
        match self {
            Self::Everything => true,
            Self::Some(revocation) => revocation.affects(context),
        }
    }
}

/// The revocations applied lately, by generation (consecutive numbers), for the guard and the
/// lookups. Bounded: an answer not checked across more revocations than it holds is treated as
/// revoked (dropped and asked again).
#[derive(Default)]
struct Recent {
    entries: std::collections::VecDeque<(u64, Arc<Revoked>)>,
}

/// About 16 s of revocations at 1 000 per second; ~100 bytes each.
const RECENT_REVOCATIONS: usize = 16_384;

/// Why a lookup's answer is not in the cache: the call failed, or it was answered across a
/// revocation (then it is used, by this lookup and the ones coalesced with it, but not kept).
#[derive(Debug, Clone)]
enum Miss {
    Failed(ClientError),
    Uncacheable(Decision),
}

impl From<ClientError> for Miss {
    fn from(err: ClientError) -> Self {
        Self::Failed(err)
    }
}

struct DecisionExpiry {
    negative_ttl: Duration,
}

impl Expiry<[u8; 32], Decision> for DecisionExpiry {
    fn expire_after_create(&self, _key: &[u8; 32], value: &Decision, _created_at: Instant) -> Option<Duration> {
        Some(match value {
            Decision::Allowed { ttl, .. } => *ttl,
            Decision::Denied { .. } => self.negative_ttl,
        })
    }
}

type Breaker = StateMachine<ConsecutiveFailures<failsafe::backoff::Constant>, ()>;

struct ServiceToken {
    token: String,
    /// Unix seconds.
    expires_at: i64,
}

struct Inner {
    config: ClientConfig,
    grpc: AuthInternalClient<Channel>,
    cache: Cache<[u8; 32], Decision>,
    token: RwLock<Option<Arc<ServiceToken>>>,
    renewing: tokio::sync::Mutex<()>,
    breaker: Breaker,
    rpcs: AtomicU64,
    lookups: AtomicU64,
    /// Lookups the cache could not answer, each one validation asked of the auth service
    /// (concurrent identical misses count once).
    misses: AtomicU64,
    /// Bumped by every revocation applied (and every flush). An answer fetched across a bump
    /// is used once and not cached: it may predate the revocation (CONVENTIONS, "every cache
    /// fed by events has a generation guard").
    generation: AtomicU64,
    /// What each generation revoked, so only answers a revocation names lose their place. A
    /// revocation is recorded here only: a lookup checks its answer against what was recorded
    /// since the answer was last checked, so applying one costs the same however large the
    /// cache, and a lookup pays only for the revocations it has not seen.
    recent: std::sync::Mutex<Recent>,
}

/// Cheap to clone; clones share the channel, cache and breaker.
#[derive(Clone)]
pub struct AuthClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthClient").field("endpoint", &self.inner.config.endpoint).finish_non_exhaustive()
    }
}

/// Renew a service token this long before it expires.
const RENEW_BEFORE: i64 = 30;
/// Most entries one `ValidateBatch` or `CheckContext` call may carry; the auth service refuses
/// larger batches.
pub const MAX_BATCH: usize = 1000;
const BACKOFF_BASE: Duration = Duration::from_millis(25);

fn now_unix() -> i64 {
    platform::clock::Clock::now(&platform::clock::SystemClock).unix_timestamp()
}

/// A failure of the transport or the auth service itself, as opposed to an answer.
fn is_outage(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::Cancelled
            | Code::ResourceExhausted
    )
}

fn denied_from(status: &Status) -> ClientError {
    let code = status
        .metadata()
        .get("x-error-code")
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorCode::from_str_name)
        .unwrap_or(ErrorCode::Forbidden);
    ClientError::Denied { code, message: status.message().to_owned() }
}

fn jitter(attempt: u32) -> Duration {
    let mut byte = [0u8; 1];
    let spread = if getrandom::fill(&mut byte).is_ok() { u64::from(byte[0]) } else { 128 };
    let base = BACKOFF_BASE.saturating_mul(1 << attempt.min(6));
    base + Duration::from_micros(spread * u64::try_from(base.as_micros()).unwrap_or(0) / 256)
}

/// The cache key: a hash of the credential and the decision's other inputs.
pub fn cache_key(credential: &str, ip: Option<IpAddr>, origin: Option<&str>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(credential.as_bytes());
    // API keys depend on IP and origin; SDK tokens (JWTs) on origin; PATs and service tokens
    // on neither.
    let (uses_ip, uses_origin) = match crate::credential::Opaque::of(credential) {
        Some(crate::credential::Opaque::ApiKey) => (true, true),
        Some(_) => (false, false),
        None => (false, true),
    };
    hasher.update([0]);
    if uses_ip && let Some(ip) = ip {
        hasher.update(platform::net::canonical(ip).to_string().as_bytes());
    }
    hasher.update([0]);
    if uses_origin && let Some(origin) = origin {
        hasher.update(origin.as_bytes());
    }
    hasher.finalize().into()
}

impl AuthClient {
    /// Builds the client; the channel connects lazily, so a service can start before the auth
    /// service and fail closed until it is reachable. Call it inside a Tokio runtime.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| ClientError::Unavailable(format!("bad AUTH_SERVICE_URL: {e}")))?
            .connect_timeout(config.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let grpc = AuthInternalClient::new(endpoint.connect_lazy());
        let cache = Cache::builder()
            .max_capacity(config.cache_capacity)
            .expire_after(DecisionExpiry { negative_ttl: config.negative_ttl })
            .build();
        let breaker = failsafe::Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                config.breaker_failures.max(1),
                failsafe::backoff::constant(config.breaker_open_for),
            ))
            .build();
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                grpc,
                cache,
                token: RwLock::new(None),
                renewing: tokio::sync::Mutex::new(()),
                breaker,
                rpcs: AtomicU64::new(0),
                lookups: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                generation: AtomicU64::new(0),
                recent: std::sync::Mutex::default(),
            }),
        })
    }

    /// gRPC calls made so far (validation calls and service-token renewals alike).
    pub fn rpc_count(&self) -> u64 {
        self.inner.rpcs.load(Ordering::Relaxed)
    }

    /// Validations answered so far, from the cache or not.
    pub fn lookup_count(&self) -> u64 {
        self.inner.lookups.load(Ordering::Relaxed)
    }

    /// Validations the cache could not answer and asked the auth service for; unlike
    /// [`Self::rpc_count`] it leaves out service-token renewals and other calls.
    pub fn miss_count(&self) -> u64 {
        self.inner.misses.load(Ordering::Relaxed)
    }

    /// Whether the breaker currently lets calls through.
    pub fn breaker_closed(&self) -> bool {
        self.inner.breaker.is_call_permitted()
    }

    /// Runs one call with the breaker, a timeout per attempt and, when `idempotent`, jittered
    /// retries. Answers (including refusals) are successes for the breaker.
    async fn call<T, F, Fut>(&self, idempotent: bool, mut attempt_fn: F) -> Result<T, ClientError>
    where
        F: FnMut(AuthInternalClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let attempts = if idempotent { 1 + self.inner.config.retries } else { 1 };
        let mut last = String::new();
        for attempt in 0..attempts {
            if !self.inner.breaker.is_call_permitted() {
                return Err(ClientError::Unavailable("circuit open: the auth service is failing".to_owned()));
            }
            self.inner.rpcs.fetch_add(1, Ordering::Relaxed);
            let outcome = tokio::time::timeout(self.inner.config.timeout, attempt_fn(self.inner.grpc.clone())).await;
            match outcome {
                Ok(Ok(value)) => {
                    self.inner.breaker.on_success();
                    return Ok(value);
                }
                Ok(Err(status)) if !is_outage(&status) => {
                    self.inner.breaker.on_success();
                    return Err(denied_from(&status));
                }
                Ok(Err(status)) => {
                    self.inner.breaker.on_error();
                    last = format!("{}: {}", status.code(), status.message());
                }
                Err(_) => {
                    self.inner.breaker.on_error();
                    last = "timed out".to_owned();
                }
            }
            if attempt + 1 < attempts {
                tokio::time::sleep(jitter(attempt)).await;
            }
        }
        Err(ClientError::Unavailable(last))
    }

    /// The current service token, renewed (once, however many callers wait) when it is about
    /// to expire.
    async fn service_token(&self) -> Result<Arc<ServiceToken>, ClientError> {
        let fresh =
            |t: &Option<Arc<ServiceToken>>| t.as_ref().filter(|t| t.expires_at - RENEW_BEFORE > now_unix()).cloned();
        if let Some(token) = fresh(&self.inner.token.read().unwrap_or_else(|p| p.into_inner())) {
            return Ok(token);
        }
        let _renewing = self.inner.renewing.lock().await;
        if let Some(token) = fresh(&self.inner.token.read().unwrap_or_else(|p| p.into_inner())) {
            return Ok(token);
        }
        let request = proto::IssueServiceTokenRequest {
            service_name: self.inner.config.service_name.clone(),
            service_secret: self.inner.config.service_secret.expose_secret().to_owned(),
        };
        let issued = self
            .call(true, |mut grpc| {
                let request = request.clone();
                async move { grpc.issue_service_token(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        let token = Arc::new(ServiceToken { token: issued.token, expires_at: issued.expires_at });
        *self.inner.token.write().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
        Ok(token)
    }

    fn with_token<T>(token: &ServiceToken, message: T) -> Result<Request<T>, ClientError> {
        let mut request = Request::new(message);
        let value = format!("Bearer {}", token.token)
            .parse()
            .map_err(|_| ClientError::Unavailable("unusable service token".to_owned()))?;
        request.metadata_mut().insert("authorization", value);
        // The caller's trace goes on to the auth service (while spans are exported).
        if let Some(traceparent) = platform::otel::current_traceparent()
            && let Ok(value) = tonic::metadata::MetadataValue::try_from(traceparent.as_bytes())
        {
            request.metadata_mut().insert("traceparent", value);
        }
        Ok(request)
    }

    /// A call that needs the service token; a token refused as expired or revoked is
    /// renewed once.
    async fn authed<T, M, F, Fut>(&self, idempotent: bool, message: M, mut f: F) -> Result<T, ClientError>
    where
        M: Clone,
        F: FnMut(AuthInternalClient<Channel>, Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        for renewed in [false, true] {
            let token = self.service_token().await?;
            let result = self
                .call(idempotent, |grpc| {
                    let request = Self::with_token(&token, message.clone());
                    let fut = request.map(|r| f(grpc, r));
                    async move {
                        match fut {
                            Ok(fut) => fut.await,
                            Err(_) => Err(Status::internal("unusable service token")),
                        }
                    }
                })
                .await;
            match result {
                Err(ClientError::Denied {
                    code: ErrorCode::TokenExpired | ErrorCode::TokenInvalid | ErrorCode::TokenMalformed,
                    ..
                }) if !renewed => {
                    *self.inner.token.write().unwrap_or_else(|p| p.into_inner()) = None;
                }
                other => return other,
            }
        }
        Err(ClientError::Unavailable("the auth service refused every service token".to_owned()))
    }

    fn decision(response: proto::ValidateResponse) -> Decision {
        match response.context.as_ref().and_then(AuthContext::from_proto) {
            Some(context) if response.valid => {
                let mut ttl = Duration::from_secs(u64::from(response.cache_ttl_seconds.min(60)));
                if let Some(expires_at) = context.expires_at {
                    let left = u64::try_from(expires_at - now_unix()).unwrap_or(0);
                    ttl = ttl.min(Duration::from_secs(left));
                }
                Decision::Allowed { context: Arc::new(context), ttl, checked: Arc::default() }
            }
            _ => Decision::Denied {
                code: ErrorCode::try_from(response.error_code).unwrap_or(ErrorCode::TokenInvalid),
                message: response.message.into(),
            },
        }
    }

    fn answer(decision: Decision) -> Result<Arc<AuthContext>, ClientError> {
        match decision {
            Decision::Allowed { context, .. } => Ok(context),
            Decision::Denied { code, message } => Err(ClientError::Denied { code, message: message.to_string() }),
        }
    }

    /// The cached answer for `key`, or `ask`'s, shared by concurrent identical misses. An
    /// answer whose call overlapped a revocation is not kept (the generation guard); one kept
    /// under `key` while a revocation was being applied is dropped again at once.
    async fn cached(
        &self,
        key: [u8; 32],
        ask: impl std::future::Future<Output = Result<Decision, ClientError>>,
    ) -> Result<Arc<AuthContext>, ClientError> {
        self.inner.lookups.fetch_add(1, Ordering::Relaxed);
        if let Some(hit) = self.lookup(&key).await {
            return Self::answer(hit);
        }
        Self::answer(self.fetch(key, ask).await?)
    }

    /// The cached answer under `key`, unless a revocation applied since it was last checked
    /// names it (then it is dropped).
    async fn lookup(&self, key: &[u8; 32]) -> Option<Decision> {
        let decision = self.inner.cache.get(key).await?;
        let Decision::Allowed { checked, .. } = &decision else {
            return Some(decision);
        };
        let seen = checked.load(Ordering::Acquire);
        if seen == self.inner.generation.load(Ordering::SeqCst) {
            return Some(decision);
        }
        match self.unrevoked_until(seen, &decision) {
            Some(now) => {
                checked.fetch_max(now, Ordering::AcqRel);
                Some(decision)
            }
            None => {
                self.inner.cache.invalidate(key).await;
                None
            }
        }
    }

    /// Asks (coalesced on `key`) and caches the answer unless a revocation was applied while
    /// it was being fetched.
    async fn fetch(
        &self,
        key: [u8; 32],
        ask: impl std::future::Future<Output = Result<Decision, ClientError>>,
    ) -> Result<Decision, ClientError> {
        let started = self.inner.generation.load(Ordering::SeqCst);
        let guarded = async {
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            let decision = ask.await?;
            if self.revoked_since(started, &decision) {
                return Err(Miss::Uncacheable(decision));
            }
            // Checked up to `started` (and by the guard above a little further): later
            // lookups check it against what comes after.
            if let Decision::Allowed { checked, .. } = &decision {
                checked.store(started, Ordering::Release);
            }
            Ok(decision)
        };
        let decision = match self.inner.cache.try_get_with(key, guarded).await {
            Ok(decision) => decision,
            Err(miss) => match miss.as_ref() {
                Miss::Failed(err) => return Err(err.clone()),
                Miss::Uncacheable(decision) => return Ok(decision.clone()),
            },
        };
        // Kept, but a revocation may have landed between the check and the insert; and an
        // answer with nothing left to live is used once and not kept.
        let expired = matches!(&decision, Decision::Allowed { ttl, .. } if ttl.is_zero());
        if expired || self.revoked_since(started, &decision) {
            self.inner.cache.invalidate(&key).await;
        }
        Ok(decision)
    }

    /// Whether a revocation applied after generation `started` names this answer's context.
    fn revoked_since(&self, started: u64, decision: &Decision) -> bool {
        self.inner.generation.load(Ordering::SeqCst) != started && self.unrevoked_until(started, decision).is_none()
    }

    /// The newest generation up to which no revocation applied after `started` names this
    /// answer's context; `None` when one does, or when `started` is older than what is
    /// remembered (it may have been revoked).
    fn unrevoked_until(&self, started: u64, decision: &Decision) -> Option<u64> {
        let Decision::Allowed { context, .. } = decision else {
            return Some(self.inner.generation.load(Ordering::SeqCst));
        };
        let recent = self.inner.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Generations only move while this lock is held: this is the newest recorded.
        let now = self.inner.generation.load(Ordering::SeqCst);
        let Some(&(oldest, _)) = recent.entries.front() else {
            return (now == started).then_some(now);
        };
        if oldest > started + 1 {
            return None;
        }
        // Consecutive generations: the first one after `started` is at this index.
        let skip = usize::try_from(started + 1 - oldest).unwrap_or(usize::MAX);
        let revoked = recent.entries.iter().skip(skip).any(|(_, r)| r.matches(context));
        (!revoked).then_some(now)
    }

    /// Records a revocation under a new generation, before the cache is invalidated, so an
    /// answer being fetched now is not kept afterwards.
    fn record_revocation(&self, revoked: Revoked) {
        let mut recent = self.inner.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        if recent.entries.len() >= RECENT_REVOCATIONS {
            recent.entries.pop_front();
        }
        recent.entries.push_back((generation, Arc::new(revoked)));
    }

    /// A token's answer. Only SDK tokens (and API keys, which come through
    /// [`Self::validate_api_key`]) depend on `Origin`; every other token is cached under a key
    /// without it, so varying `Origin` cannot force calls to the auth service.
    async fn cached_token(
        &self,
        credential: &str,
        ip: Option<IpAddr>,
        origin: Option<&str>,
        ask: impl std::future::Future<Output = Result<Decision, ClientError>>,
    ) -> Result<Arc<AuthContext>, ClientError> {
        let full = cache_key(credential, ip, origin);
        let plain = if origin.is_some() && !credential.starts_with(crate::credential::API_KEY_PREFIX) {
            cache_key(credential, ip, None)
        } else {
            full
        };
        if plain != full {
            self.inner.lookups.fetch_add(1, Ordering::Relaxed);
            if let Some(hit @ Decision::Allowed { .. }) = self.lookup(&plain).await
                && !Self::uses_origin(&hit)
            {
                return Self::answer(hit);
            }
            if let Some(hit) = self.lookup(&full).await {
                return Self::answer(hit);
            }
            let decision = self.fetch(full, ask).await?;
            if !Self::uses_origin(&decision) {
                // Kept where every origin finds it; the origin-specific copy is not needed.
                self.inner.cache.invalidate(&full).await;
                if matches!(&decision, Decision::Allowed { ttl, .. } if !ttl.is_zero()) {
                    self.inner.cache.insert(plain, decision.clone()).await;
                }
            }
            return Self::answer(decision);
        }
        self.cached(full, ask).await
    }

    /// The cached allowed answer for `presented`, if the cache holds one: no call, no wait,
    /// and nothing else changes. A caller that counts attempts (the gateway's
    /// authentication-failure limit) skips the count for these; a cached refusal is not
    /// answered here, so it goes through [`Self::validate`] and is counted again.
    pub async fn cached_allowed(
        &self,
        presented: crate::Presented<'_>,
        ip: Option<IpAddr>,
        origin: Option<&str>,
    ) -> Option<Arc<AuthContext>> {
        let (credential, api_key) = match presented {
            crate::Presented::Token(token) => (token.trim(), false),
            crate::Presented::ApiKey(key) => (key.trim(), true),
        };
        // Where `cached_token` keeps an answer that does not depend on the origin.
        let mut hit = None;
        if !api_key && origin.is_some() && !credential.starts_with(crate::credential::API_KEY_PREFIX) {
            hit = self.lookup(&cache_key(credential, ip, None)).await.filter(|d| !Self::uses_origin(d));
        }
        if hit.is_none() {
            hit = self.lookup(&cache_key(credential, ip, origin)).await;
        }
        match hit? {
            Decision::Allowed { context, .. } => {
                self.inner.lookups.fetch_add(1, Ordering::Relaxed);
                Some(context)
            }
            Decision::Denied { .. } => None,
        }
    }

    /// Whether an answer depended on the request's `Origin`.
    fn uses_origin(decision: &Decision) -> bool {
        match decision {
            Decision::Allowed { context, .. } => matches!(context.kind, crate::Kind::Sdk | crate::Kind::ApiKey),
            // A refusal may have been the origin's doing: it stays under the origin's key.
            Decision::Denied { .. } => true,
        }
    }

    /// Validates an access token, SDK token, PAT or service token (or an API key). The
    /// context is shared with the cache, not copied.
    pub async fn validate(
        &self,
        credential: &str,
        ip: Option<IpAddr>,
        origin: Option<&str>,
    ) -> Result<Arc<AuthContext>, ClientError> {
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(ClientError::Denied { code: ErrorCode::TokenMissing, message: "no credential".to_owned() });
        }
        self.cached_token(credential, ip, origin, async {
            let request = proto::ValidateRequest {
                credential: credential.to_owned(),
                ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
                origin: origin.unwrap_or_default().to_owned(),
            };
            let response =
                self.authed(true, request, |mut grpc, r| async move {
                    grpc.validate(r).await.map(tonic::Response::into_inner)
                })
                .await?;
            Ok(Self::decision(response))
        })
        .await
    }

    /// Validates an API key with its client's IP allowlist and origins.
    pub async fn validate_api_key(
        &self,
        key: &str,
        ip: Option<IpAddr>,
        origin: Option<&str>,
    ) -> Result<Arc<AuthContext>, ClientError> {
        let key = key.trim();
        self.cached(cache_key(key, ip, origin), async {
            let request = proto::ValidateApiKeyRequest {
                api_key: key.to_owned(),
                ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
                origin: origin.unwrap_or_default().to_owned(),
            };
            let response = self
                .authed(true, request, |mut grpc, r| async move {
                    grpc.validate_api_key(r).await.map(tonic::Response::into_inner)
                })
                .await?;
            Ok(Self::decision(response))
        })
        .await
    }

    /// Many validations in one call, uncached (for batch consumers and benchmarks): one answer
    /// per request, in order, each the context or the refusal.
    pub async fn validate_batch(
        &self,
        requests: Vec<proto::ValidateRequest>,
    ) -> Result<Vec<Result<AuthContext, Refusal>>, ClientError> {
        let message = proto::ValidateBatchRequest { requests };
        let response = self
            .authed(true, message, |mut grpc, r| async move {
                grpc.validate_batch(r).await.map(tonic::Response::into_inner)
            })
            .await?;
        Ok(response
            .responses
            .into_iter()
            .map(|answer| match Self::decision(answer) {
                Decision::Allowed { context, .. } => Ok(Arc::unwrap_or_clone(context)),
                Decision::Denied { code, message } => Err(Refusal { code, message: message.to_string() }),
            })
            .collect())
    }

    /// Whether contexts validated earlier are still live (`CheckContext`), in order, asked in
    /// batches of at most [`MAX_BATCH`]; uncached, since its callers ask exactly to see past
    /// every cache.
    pub async fn check_contexts(&self, refs: &[crate::ContextRef]) -> Result<Vec<crate::Liveness>, ClientError> {
        let mut answers = Vec::with_capacity(refs.len());
        for chunk in refs.chunks(MAX_BATCH) {
            let message = proto::CheckContextRequest { refs: chunk.iter().map(crate::ContextRef::to_proto).collect() };
            let response = self
                .authed(true, message, |mut grpc, r| async move {
                    grpc.check_context(r).await.map(tonic::Response::into_inner)
                })
                .await?;
            if response.results.len() != chunk.len() {
                return Err(ClientError::Unavailable(format!(
                    "CheckContext answered {} results for {} references",
                    response.results.len(),
                    chunk.len()
                )));
            }
            answers.extend(response.results.iter().map(crate::Liveness::from_proto));
        }
        Ok(answers)
    }

    /// Every client's allowed origins.
    pub async fn list_allowed_origins(&self) -> Result<Vec<String>, ClientError> {
        let response = self
            .authed(true, proto::Empty {}, |mut grpc, r| async move {
                grpc.list_allowed_origins(r).await.map(tonic::Response::into_inner)
            })
            .await?;
        Ok(response.origins)
    }

    /// Opens an SDK session (not retried: it is not idempotent).
    pub async fn create_sdk_session(&self, request: proto::CreateSdkSessionRequest) -> Result<Issued, ClientError> {
        let response = self
            .authed(false, request, |mut grpc, r| async move {
                grpc.create_sdk_session(r).await.map(tonic::Response::into_inner)
            })
            .await?;
        Issued::new(response.access_token, response.refresh_token, response.expires_in, response.context.as_ref())
    }

    /// Rotates a refresh token (not retried: a retry would spend the successor).
    pub async fn refresh(&self, request: proto::RefreshRequest) -> Result<Issued, ClientError> {
        let response = self
            .authed(false, request, |mut grpc, r| async move { grpc.refresh(r).await.map(tonic::Response::into_inner) })
            .await?;
        Issued::new(response.access_token, response.refresh_token, response.expires_in, response.context.as_ref())
    }

    /// Drops every cached answer.
    pub fn clear(&self) {
        self.record_revocation(Revoked::Everything);
        self.inner.cache.invalidate_all();
    }

    /// Drops the answers an event ends or changes (SPEC §4, [`Revocation::from_event`]);
    /// other events are ignored.
    pub fn apply_event(&self, channel: &str, payload: &str) {
        if let Some(revocation) = Revocation::from_event(channel, payload) {
            self.apply(revocation);
        }
    }

    /// Drops the answers a revocation ends or changes: recorded under a new generation, it
    /// refuses every answer it names from the next lookup on (the lookup drops it), and an
    /// answer being fetched now is not kept.
    pub fn apply(&self, revocation: Revocation) {
        self.record_revocation(Revoked::Some(revocation));
    }

    /// Follows revocation events on the bus until the subscription ends; clears the cache
    /// whenever the subscription reconnects.
    pub async fn follow(&self, bus: Arc<dyn EventBus>) -> Result<tokio::task::JoinHandle<()>, platform::Unavailable> {
        let mut events = bus.subscribe(&[events::ALL]).await?;
        let client = self.clone();
        Ok(tokio::spawn(async move {
            while let Some(message) = events.next().await {
                match message {
                    BusMessage::Event(event) => client.apply_event(&event.channel, &event.payload),
                    BusMessage::Resubscribed => client.clear(),
                }
            }
        }))
    }
}
