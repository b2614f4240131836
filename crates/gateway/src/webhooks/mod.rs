//! Webhook ingestion (SPEC §6): `POST /v1/webhooks/{source}` verifies the sender's signature,
//! checks the payload against the source's schema, refuses replays, stores the event durably
//! and answers 202; a worker per source forwards it to the configured upstream. `GET` answers
//! Meta's verification handshake.
//! Design notes and operator guidance: `docs/webhooks.md`.

pub mod admin;
pub mod amqp;
pub mod deliver;
pub mod dispatch;
mod encoding;
pub mod metrics;
pub mod ordering;
pub mod outbox;
pub mod render;
pub mod replay;
pub mod schema;
pub mod verify;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::PathBuf,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, Query, Request, State, rejection::PathRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use http::Uri;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use platform::{
    Unavailable,
    clock::{Clock, SystemClock},
};
use serde_json::json;
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

pub use self::{amqp::AmqpSettings, deliver::RetryPolicy};
use self::{
    amqp::{AmqpIndex, AmqpOutbox},
    dispatch::{Dispatcher, Lease},
    ordering::Sequencer,
    outbox::{DeadLetter, Outbox, RedisOutbox, SpoolOutbox, StoredEvent},
    render::Render,
    replay::{MemoryReplayGuard, RedisReplayGuard, ReplayGuard, Seen},
    schema::OnSchemaFailure,
    verify::Verifier,
};
use crate::{config::routes::Webhook, error::GatewayError, pipeline::ClientIp};

/// The spool's directory under `DATA_DIR` (embedded mode).
pub const SPOOL_DIR: &str = "webhooks";
/// The path the gateway mounts.
pub const PATH: &str = "/v1/webhooks/{source}";
/// Largest accepted body; senders' own limits are below this (Meta and Standard Webhooks
/// senders stay well under 1 MiB).
pub const MAX_BODY: usize = 1 << 20;
/// The refusal of a replay.
const ALREADY_RECEIVED: &str = "this delivery was already received";
/// Longest `hub.challenge` echoed back.
const MAX_CHALLENGE: usize = 1024;

/// What the ingestion needs from the process.
pub struct WebhookDeps {
    /// Distributed mode: the replay guard and outbox live in Redis. `None`: embedded mode,
    /// an in-memory replay guard and the spool directory.
    pub redis: Option<deadpool_redis::Pool>,
    /// Namespaces every Redis key (`<prefix>webhooks:…`).
    pub key_prefix: String,
    /// Embedded mode's outbox, one sub-directory per source.
    pub spool_dir: PathBuf,
    /// Counts each source's own `rate_limit`.
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
}

/// Knobs tests turn; the gateway uses the defaults.
#[derive(Clone)]
pub struct WebhookOptions {
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self { clock: Arc::new(SystemClock), retry: RetryPolicy::default() }
    }
}

struct Source {
    hook: Webhook,
    verifier: Verifier,
    /// Wakes the source's worker when this instance stores an event.
    notify: Arc<Notify>,
}

/// The running ingestion: verifiers, replay guard, outbox and delivery workers.
pub struct Webhooks {
    sources: BTreeMap<String, Source>,
    replay: Arc<dyn ReplayGuard>,
    outbox: Arc<dyn Outbox>,
    sequencer: Sequencer,
    metrics: Arc<metrics::WebhookMetrics>,
    clock: Arc<dyn Clock>,
    limiter: Arc<crate::ratelimit::RateLimiter>,
    stop: watch::Sender<bool>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// The dispatch leases this instance may hold, let go on stop.
    leases: Vec<Arc<dispatch::LeaseId>>,
    /// The outbox when it is RabbitMQ, for tests that cut its connection.
    #[cfg(test)]
    broker: Option<Arc<AmqpOutbox>>,
}

fn unavailable(e: &Unavailable) -> GatewayError {
    tracing::warn!(dependency = e.dependency, error = %e.message, "webhook dependency unavailable");
    GatewayError::Unavailable { dependency: e.dependency }
}

/// Where `hook`'s events go: its upstream (the path, `/` when it has none), with TLS to an
/// https one against its `ca_file` or the system's roots; or the broker's exchange, which
/// must exist. A root that cannot be read, a missing broker or exchange stops the start-up
/// naming the key.
async fn delivery_target(hook: &Webhook, broker: Option<&Arc<AmqpOutbox>>) -> Result<deliver::Target, String> {
    let name = &hook.source;
    if let Some(publish) = &hook.delivery.publish {
        let broker = broker.ok_or_else(|| format!("webhooks.{name}.publish: needs AMQP_URL (the broker)"))?;
        broker
            .check_exchange(&publish.exchange)
            .await
            .map_err(|e| format!("webhooks.{name}.publish.exchange `{}`: {e}", publish.exchange))?;
        return Ok(deliver::Target::Broker {
            broker: broker.clone(),
            exchange: publish.exchange.clone(),
            routing_key: publish.routing_key.clone(),
        });
    }
    let upstream = hook.upstream.as_ref().ok_or_else(|| format!("webhooks.{name}: no upstream"))?;
    let path = if upstream.base_path().is_empty() { "/" } else { "" };
    let url = Uri::from_str(&upstream.join(path)).map_err(|e| format!("webhooks.{name}.upstream: {e}"))?;
    let roots = match (&hook.delivery.ca_file, upstream.is_https()) {
        (Some(file), _) => deliver::Roots::File(file),
        (None, true) => deliver::Roots::System,
        (None, false) => deliver::Roots::Unused,
    };
    let field = if hook.delivery.ca_file.is_some() { "ca_file" } else { "upstream" };
    let client = deliver::client(roots).map_err(|e| format!("webhooks.{name}.{field}: {e}"))?;
    Ok(deliver::Target::Http { url, client: Box::new(client) })
}

impl Webhooks {
    /// Builds verifiers, the replay guard and the outbox; spawns one delivery worker per source.
    pub async fn start(hooks: &BTreeMap<String, Webhook>, deps: WebhookDeps) -> Result<Arc<Self>, String> {
        Self::start_with(hooks, deps, WebhookOptions::default()).await
    }

    /// [`Webhooks::start`] with the outbox on RabbitMQ when `amqp` is given (`AMQP_URL`);
    /// the replay guard stays where [`WebhookDeps`] puts it.
    pub async fn start_with_broker(
        hooks: &BTreeMap<String, Webhook>,
        deps: WebhookDeps,
        amqp: Option<AmqpSettings>,
    ) -> Result<Arc<Self>, String> {
        Self::launch(hooks, deps, amqp, WebhookOptions::default()).await
    }

    /// [`Webhooks::start`] with an injected clock and retry pacing.
    pub async fn start_with(
        hooks: &BTreeMap<String, Webhook>,
        deps: WebhookDeps,
        options: WebhookOptions,
    ) -> Result<Arc<Self>, String> {
        Self::launch(hooks, deps, None, options).await
    }

    async fn launch(
        hooks: &BTreeMap<String, Webhook>,
        deps: WebhookDeps,
        amqp: Option<AmqpSettings>,
        options: WebhookOptions,
    ) -> Result<Arc<Self>, String> {
        if !hooks.is_empty() && deps.redis.is_none() {
            platform::fs::private_dir(&deps.spool_dir)
                .map_err(|e| format!("webhook spool directory {}: {e}", deps.spool_dir.display()))?;
        }
        let replay: Arc<dyn ReplayGuard> = match deps.redis.clone() {
            Some(pool) => Arc::new(RedisReplayGuard::new(pool, &deps.key_prefix)),
            None => Arc::new(MemoryReplayGuard::new(options.clock.clone())),
        };
        // The broker, when configured, is the outbox; else Redis, else the spool.
        let broker = amqp.map(|settings| {
            let index = match deps.redis.clone() {
                Some(pool) => AmqpIndex::Redis { pool, key_prefix: deps.key_prefix.clone() },
                None => AmqpIndex::Spool(deps.spool_dir.clone()),
            };
            Arc::new(AmqpOutbox::new(&settings, index))
        });
        let outbox: Arc<dyn Outbox> = match (&broker, deps.redis.clone()) {
            (Some(broker), _) => broker.clone(),
            (None, Some(pool)) => Arc::new(RedisOutbox::new(pool, &deps.key_prefix)),
            (None, None) => Arc::new(SpoolOutbox::new(deps.spool_dir.clone())),
        };
        let (stop, stop_rx) = watch::channel(false);
        let metrics = Arc::new(metrics::WebhookMetrics::new(hooks.keys()));
        let mut sources = BTreeMap::new();
        let mut workers = Vec::new();
        let mut leases = Vec::new();
        for (name, hook) in hooks {
            let verifier = Verifier::new(hook)?;
            let render = Arc::new(Render::new(hook)?);
            let target = Arc::new(delivery_target(hook, broker.as_ref()).await?);
            if !hook.delivery.envelope_chosen {
                tracing::warn!(
                    source = %name,
                    "webhooks.{name} sets no `envelope`: events are delivered as CloudEvents \
                     (application/cloudevents+json); set envelope = \"raw\" to deliver the sender's bytes as before"
                );
            }
            // With Redis, the instance holding a source's lease dispatches it and puts back
            // what an earlier holder left; alone, this process does so now.
            let lease = deps.redis.clone().map(|pool| Lease::new(pool, &deps.key_prefix, name));
            leases.extend(lease.as_ref().map(Lease::id));
            if lease.is_none() {
                let pending = outbox.recover(name).await.map_err(|e| format!("webhooks.{name}: {e}"))?;
                if pending > 0 {
                    tracing::info!(source = %name, pending, "webhook events pending from a previous run");
                }
            } else {
                outbox.prepare(name).await.map_err(|e| format!("webhooks.{name}: {e}"))?;
            }
            let notify = Arc::new(Notify::new());
            let dispatcher = Dispatcher {
                source: name.clone(),
                target,
                outbox: outbox.clone(),
                render,
                notify: notify.clone(),
                stop: stop_rx.clone(),
                policy: options.retry,
                delivery: hook.delivery.clone(),
                lease,
                metrics: metrics.clone(),
            };
            workers.push(tokio::spawn(dispatcher.run()));
            sources.insert(name.clone(), Source { hook: hook.clone(), verifier, notify });
        }
        Ok(Arc::new(Self {
            sources,
            replay,
            outbox,
            sequencer: Sequencer::new(deps.redis.clone(), &deps.key_prefix),
            metrics,
            clock: options.clock,
            limiter: deps.limiter,
            stop,
            workers: Mutex::new(workers),
            leases,
            #[cfg(test)]
            broker,
        }))
    }

    /// Stops the workers (called on shutdown). An event in flight stays stored and is
    /// delivered again after the next start.
    pub fn stop(&self) {
        self.stop.send_replace(true);
        // Aborting as well as signalling makes the stop immediate even for a worker waiting on
        // a slow upstream; whatever it was doing is safe to cut short, because an event leaves
        // the outbox only after its delivery, and a cut-short removal means one more delivery.
        for worker in std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner())) {
            worker.abort();
        }
        self.outbox.release();
        // Another instance takes the sources over at once rather than when the leases expire.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for lease in self.leases.clone() {
                runtime.spawn(async move { lease.release().await });
            }
        }
    }

    /// Events waiting for delivery, for /metrics and tests.
    pub async fn pending(&self, source: &str) -> Result<u64, GatewayError> {
        if !self.sources.contains_key(source) {
            return Err(GatewayError::NotFound);
        }
        self.outbox.pending(source).await.map_err(|e| unavailable(&e))
    }

    /// The pipeline's metric families for `/metrics`, ages computed for `now` (unix seconds).
    pub fn metric_families(&self, now: i64) -> Vec<prometheus::proto::MetricFamily> {
        self.metrics.gather(now)
    }

    /// The source's dead letters, oldest first, each with the name it is indexed under.
    pub async fn dead_letters(&self, source: &str) -> Result<Vec<(String, DeadLetter)>, GatewayError> {
        if !self.sources.contains_key(source) {
            return Err(GatewayError::NotFound);
        }
        self.outbox.dead_letters().list(source).await.map_err(|e| unavailable(&e))
    }

    /// Puts the dead letter indexed as `name` back in its source's queue, attempts starting
    /// over; `false` when there is none of that name.
    pub async fn replay_dead_letter(&self, source: &str, name: &str) -> Result<bool, GatewayError> {
        let Some(hook) = self.sources.get(source) else { return Err(GatewayError::NotFound) };
        let replayed = outbox::replay(self.outbox.as_ref(), source, name).await.map_err(|e| unavailable(&e))?;
        if replayed {
            hook.notify.notify_one();
        }
        Ok(replayed)
    }

    fn source(&self, path: Result<Path<String>, PathRejection>) -> Result<&Source, GatewayError> {
        let Ok(Path(name)) = path else { return Err(GatewayError::NotFound) };
        self.sources.get(&name).ok_or(GatewayError::NotFound)
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// The caller's address: the client-IP layer's decision, else the TCP peer.
fn caller_ip(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<ClientIp>()
        .map(|ip| ip.0)
        .or_else(|| request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
}

fn check_ip(source: &Source, request: &Request) -> Result<(), GatewayError> {
    if source.hook.allowed_ips.is_empty() {
        return Ok(());
    }
    // An unknown address cannot be shown to be allowed: fail closed.
    match caller_ip(request) {
        Some(ip) if source.hook.ip_allowed(ip) => Ok(()),
        _ => Err(GatewayError::Forbidden("deliveries for this source are not accepted from this address".into())),
    }
}

/// `GET` and `POST /v1/webhooks/{source}`; body limit 1 MiB (413 beyond); never a 500 for bad input.
pub fn router(webhooks: Arc<Webhooks>) -> Router {
    Router::new()
        .route(PATH, get(handshake).post(ingest).fallback(|| async { GatewayError::MethodNotAllowed { allow: None } }))
        .with_state(webhooks)
}

/// Meta's subscription check: echo `hub.challenge` when `hub.verify_token` is ours.
async fn handshake(
    State(webhooks): State<Arc<Webhooks>>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, GatewayError> {
    let source = webhooks.source(path)?;
    if !source.verifier.is_meta() {
        return Err(GatewayError::MethodNotAllowed { allow: Some("POST") });
    }
    check_ip(source, &request)?;
    let Query(query) = Query::<HashMap<String, String>>::try_from_uri(request.uri())
        .map_err(|_| GatewayError::BadRequest("the query string is malformed".into()))?;
    let mode = query.get("hub.mode").map(String::as_str);
    let token = query.get("hub.verify_token").map(String::as_str).unwrap_or_default();
    // The token is compared even when the mode is wrong, so the answer's timing says nothing.
    let token_ok = source.verifier.handshake_token_matches(token);
    if mode != Some("subscribe") || !token_ok {
        tracing::warn!(source = %source.hook.source, "webhook handshake refused");
        return Err(GatewayError::Forbidden("the verification token does not match".into()));
    }
    let challenge = query
        .get("hub.challenge")
        .filter(|c| !c.is_empty() && c.len() <= MAX_CHALLENGE)
        .ok_or_else(|| GatewayError::BadRequest(format!("hub.challenge must be 1 to {MAX_CHALLENGE} characters")))?;
    let mut response = (StatusCode::OK, challenge.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    // The challenge is the caller's own text echoed back; never let a browser sniff it.
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// Reads the body up to [`MAX_BODY`], refusing a larger declared length before reading. A
/// gzip body is inflated as it arrives; both what is sent and what it inflates to are capped
/// at the limit, and reading stops at the first byte past it.
async fn read_body(request: Request, coding: encoding::Coding) -> Result<bytes::Bytes, GatewayError> {
    let too_large = GatewayError::BodyTooLarge { limit: MAX_BODY as u64 };
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(too_large);
    }
    let read_error = |e: axum::BoxError| {
        if e.downcast_ref::<LengthLimitError>().is_some() {
            too_large.clone()
        } else {
            GatewayError::BadRequest("the request body could not be read".into())
        }
    };
    let mut body = Limited::new(request.into_body(), MAX_BODY);
    if coding == encoding::Coding::Identity {
        return body.collect().await.map(|collected| collected.to_bytes()).map_err(read_error);
    }
    let mut inflater = encoding::Inflater::new(MAX_BODY);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(read_error)?.into_data() {
            inflater.write(&data)?;
        }
    }
    inflater.finish().map(bytes::Bytes::from)
}

/// `POST`: [`accept`], counted per source (received, then stored or refused by reason).
async fn ingest(
    State(webhooks): State<Arc<Webhooks>>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, GatewayError> {
    let source = match &path {
        Ok(Path(name)) if webhooks.sources.contains_key(name) => Some(name.clone()),
        _ => None,
    };
    let Some(source) = source else { return accept(State(webhooks), path, request).await };
    let metrics = webhooks.metrics.clone();
    metrics.received(&source);
    let outcome = accept(State(webhooks), path, request).await;
    match &outcome {
        Ok(response) if response.status() == StatusCode::ACCEPTED => metrics.stored(&source),
        Ok(_) => metrics.refused(&source, "unsupported_media_type"),
        Err(GatewayError::SignatureInvalid(message)) if message == ALREADY_RECEIVED => {
            metrics.refused(&source, metrics::REPLAY);
        }
        Err(e) => metrics.refused(&source, e.code()),
    }
    outcome
}

async fn accept(
    State(webhooks): State<Arc<Webhooks>>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, GatewayError> {
    let source = webhooks.source(path)?;
    let name = source.hook.source.as_str();
    check_ip(source, &request)?;
    if let Some(limit) = source.hook.rate_limit {
        let decision = webhooks.limiter.check(&format!("webhook:{name}"), limit).await;
        if !decision.allowed {
            return Err(GatewayError::RateLimited { retry_after: decision.retry_after });
        }
    }
    let headers = request.headers().clone();
    let coding = match encoding::coding(&headers) {
        Ok(coding) => coding,
        Err(refusal) => {
            tracing::warn!(source = name, "webhook refused: unsupported content encoding");
            return Ok(refusal.into_response());
        }
    };
    // From here on the body is the inflated bytes: signatures cover them, and the event is
    // stored and delivered as them, without `Content-Encoding`.
    let body = read_body(request, coding).await?;

    let now = webhooks.clock.now().unix_timestamp();
    let verified = source.verifier.verify(&headers, &body, now).inspect_err(|e| {
        tracing::warn!(source = name, error = %e, "webhook refused");
    })?;

    // The body as JSON, parsed once for the schema and the ordering key.
    let wants_json = source.hook.schema.is_some() || source.hook.delivery.ordering.is_some();
    let json = wants_json.then(|| serde_json::from_slice::<serde_json::Value>(&body));
    // Checked before the replay mark is taken: a refused payload leaves no mark, so the
    // sender's corrected delivery of the same event is accepted.
    let refusal = match (&source.hook.schema, &json) {
        (Some(schema), Some(json)) => match schema.check(json.as_ref()) {
            Ok(()) => None,
            Err(failure) if schema.on_failure == OnSchemaFailure::Reject => {
                tracing::warn!(source = name, failures = failure.total, first = %failure.reason(), "webhook refused: payload does not match the schema");
                return Err(failure.into_error());
            }
            Err(failure) => Some(failure.reason()),
        },
        _ => None,
    };

    // An event is acceptable for ±tolerance around its timestamp, so it must be remembered
    // for twice the tolerance to outlive every moment a replay could still pass.
    let replay_key = format!("{name}:{}", verified.replay_key);
    let window = source.hook.tolerance.saturating_mul(2).max(Duration::from_secs(1));
    match webhooks.replay.mark(&replay_key).await.map_err(|e| unavailable(&e))? {
        Seen::New => {}
        Seen::Replay => {
            tracing::warn!(source = name, "webhook replay refused");
            return Err(GatewayError::SignatureInvalid(ALREADY_RECEIVED.into()));
        }
        // Another delivery of this event is being stored (or one was cut short): its outcome
        // decides, so the sender tries again shortly.
        Seen::Pending => return Err(GatewayError::Unavailable { dependency: "webhook outbox" }),
    }

    let id = verified.event_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let payload = json.as_ref().and_then(|json| json.as_ref().ok());
    let key =
        source.hook.delivery.ordering.as_ref().and_then(|ordering| ordering::resolve(ordering, &headers, payload));
    let refused = refusal.is_some();
    let stored = async {
        let sequence = webhooks.sequencer.next(name).await?;
        let mut event =
            StoredEvent::new(id.clone(), name.to_owned(), now, content_type, verified.forward_headers, &body)
                .ordered(key, sequence);
        if let Some(reason) = refusal {
            // Kept for an operator in the dead letters, never delivered as it is.
            event = event.refused(reason);
        }
        webhooks.outbox.push(&event).await
    }
    .await;
    if let Err(e) = stored {
        // Not stored, so not accepted: the sender must be able to retry with the same id.
        if let Err(release) = webhooks.replay.release(&replay_key).await {
            tracing::warn!(source = name, error = %release, "cannot release the replay key of an unstored event");
        }
        return Err(unavailable(&e));
    }
    if let Err(e) = webhooks.replay.accept(&replay_key, window).await {
        // Stored all the same: the pending mark expires, after which a replay would be
        // stored again and delivered twice (upstreams dedupe on the id).
        tracing::warn!(source = name, error = %e, "cannot record an accepted webhook event's replay key");
    }
    source.notify.notify_one();
    if refused {
        tracing::warn!(source = name, id = %id, bytes = body.len(), "webhook event accepted for the dead letters: payload does not match the schema");
    } else {
        tracing::info!(source = name, id = %id, bytes = body.len(), "webhook event accepted");
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": true, "id": id }))).into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
mod conformance;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
mod end_to_end;
#[cfg(test)]
mod tests;
