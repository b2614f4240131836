//! The webhook outbox on RabbitMQ (`AMQP_URL`, SPEC §6): one durable quorum queue per source,
//! `<prefix><source>`, bounded by `x-max-length` with `x-overflow = reject-publish`, and its
//! dead letters in `<prefix><source>.dead` (a source name has no dot, so the two cannot meet).
//!
//! An event is stored by a persistent (`delivery_mode` 2), `mandatory` publish through the
//! default exchange on a channel in confirm mode; [`Outbox::push`] answers `Ok` only once the
//! broker has acknowledged it. A nack (the queue is full), a return (no such queue), a confirm
//! that does not come in time or a lost connection is [`Unavailable`], which the ingestion
//! answers with 503 and `Retry-After`, so the sender keeps the event.
//!
//! The worker pulls with `basic.get` (manual acknowledgement) on a channel kept per source;
//! a delivered event is acknowledged, a refused one is published with confirm to the dead
//! letters and then acknowledged. Deliveries unacknowledged when their channel or connection
//! closes go back to the queue by the broker's own rule, which is what [`Outbox::recover`]
//! relies on (it also closes this instance's channel for the source). An acknowledgement that
//! would name a delivery of a channel since closed is skipped: the broker has already put the
//! event back, and it is delivered again (at least once, never lost).
//!
//! A dropped connection is opened again by the next call; failed attempts back off
//! exponentially (200 ms doubling to 10 s), calls in between fail at once. Every broker call is
//! bounded by a timeout. Only plain `amqp://` is supported: the workspace carries no TLS
//! library for lapin, so `amqps://` is refused by the configuration; run the broker on the
//! private network (or behind a local TLS tunnel).
//!
//! The bound is a quorum queue's: the queue refuses publishes once it is *over*
//! `x-max-length` (so the publish that reaches it, and any in flight at that moment, still
//! get in) and accepts again once it is back under about 80 % of it.
//!
//! The queue arguments are fixed when a queue is first declared: changing `AMQP_MAX_LENGTH`
//! later makes the declaration fail (`PRECONDITION_FAILED`) until the queue is deleted or the
//! bound is changed by a policy instead.

use std::{
    collections::HashMap,
    fmt::Display,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};
use platform::Unavailable;
use secrecy::{ExposeSecret as _, SecretString};
use tokio::time::Instant;

use super::outbox::{
    Claimed, DeadLetter, DeadLetters, Delay, Outbox, RedisDeadLetters, Settled, SpoolDeadLetters, StoredEvent, Waiting,
    now_ms,
};

/// `AMQP_QUEUE_PREFIX`'s default.
pub const DEFAULT_QUEUE_PREFIX: &str = "portcullis.webhooks.";
/// `AMQP_MAX_LENGTH`'s default: events waiting per source before pushes are refused.
pub const DEFAULT_MAX_LENGTH: u64 = 100_000;
/// One broker call (connect, declare, publish confirm, get).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(10);
const DEAD_SUFFIX: &str = ".dead";
/// The longest a delivery is held unacknowledged behind an earlier event of its key.
const MAX_HOLD: Duration = Duration::from_secs(10 * 60);
/// `<queue>.delay.<ms>`: one delay queue per tier of the retry schedule (and of parking).
const DELAY_SUFFIX: &str = ".delay.";
/// A deferred event not back this long after it was due is put back into the queue from
/// the ledger's copy.
const RESCUE_AFTER: Duration = Duration::from_secs(15);
/// A delay queue's own TTL is its tier plus this share, the most jitter can add.
const DELAY_SLACK_PERCENT: u64 = 25;

/// Where and how the outbox reaches RabbitMQ.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost`; the password is never logged.
    pub url: SecretString,
    /// Prepended to each source's name to make its queue's.
    pub queue_prefix: String,
    /// `x-max-length` of each source's queue.
    pub max_length: u64,
}

/// Where the RabbitMQ outbox keeps what a queue cannot be asked for: the dead-letter index
/// (by event id) and the ledger of deferred events (which keys are busy).
#[derive(Clone)]
pub enum AmqpIndex {
    /// Distributed mode: `<prefix>webhooks:dead-letters:<source>` and
    /// `<prefix>webhooks:waiting:<source>` with `<prefix>webhooks:waiting-events:<source>`,
    /// shared by every instance.
    Redis { pool: deadpool_redis::Pool, key_prefix: String },
    /// Embedded mode: dead letters under the spool directory; the ledger in this process.
    Spool(std::path::PathBuf),
}

/// The deferred events per source, by sequence: when each is due back (read whole by a
/// takeover and by every look for overdue events) and, apart, a copy of each as it was
/// deferred (read only for an event that is overdue, so it can be put back if the broker does
/// not bring it back; entries written before copies were kept have none).
enum Ledger {
    /// `<prefix>webhooks:waiting:<source>` (sequence → [`Waiting`]) and
    /// `<prefix>webhooks:waiting-events:<source>` (sequence → [`StoredEvent`]).
    Redis {
        pool: deadpool_redis::Pool,
        prefix: String,
    },
    Memory(Mutex<HashMap<String, HashMap<u64, Kept>>>),
}

/// One entry of the in-process ledger: when it is due back, and its copy.
type Kept = (Waiting, Option<StoredEvent>);

fn redis_err(e: impl Display) -> Unavailable {
    Unavailable::new("redis", e)
}

impl Ledger {
    /// The Redis hashes of `source`: the due times and the copies.
    fn keys(prefix: &str, source: &str) -> (String, String) {
        (format!("{prefix}webhooks:waiting:{source}"), format!("{prefix}webhooks:waiting-events:{source}"))
    }

    /// Records `waiting`, with `copy` when given (otherwise an earlier copy stays).
    async fn record(&self, source: &str, waiting: &Waiting, copy: Option<&StoredEvent>) -> Result<(), Unavailable> {
        match self {
            Self::Redis { pool, prefix } => {
                let (due, copies) = Self::keys(prefix, source);
                let mut pipe = platform::redis::client::pipe();
                pipe.atomic();
                pipe.cmd("HSET")
                    .arg(&due)
                    .arg(waiting.sequence)
                    .arg(serde_json::to_string(waiting).map_err(redis_err)?);
                pipe.ignore();
                if let Some(copy) = copy {
                    let json = serde_json::to_string(copy).map_err(redis_err)?;
                    pipe.cmd("HSET").arg(&copies).arg(waiting.sequence).arg(json).ignore();
                }
                let mut conn = pool.get().await.map_err(redis_err)?;
                pipe.query_async::<()>(&mut conn).await.map_err(redis_err)
            }
            Self::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                let entry = map
                    .entry(source.to_owned())
                    .or_default()
                    .entry(waiting.sequence)
                    .or_insert((waiting.clone(), None));
                entry.0 = waiting.clone();
                if let Some(copy) = copy {
                    entry.1 = Some(copy.clone());
                }
                Ok(())
            }
        }
    }

    async fn forget(&self, source: &str, sequence: u64) -> Result<(), Unavailable> {
        match self {
            Self::Redis { pool, prefix } => {
                let (due, copies) = Self::keys(prefix, source);
                let mut pipe = platform::redis::client::pipe();
                pipe.atomic();
                pipe.cmd("HDEL").arg(&due).arg(sequence).ignore();
                pipe.cmd("HDEL").arg(&copies).arg(sequence).ignore();
                let mut conn = pool.get().await.map_err(redis_err)?;
                pipe.query_async::<()>(&mut conn).await.map_err(redis_err)
            }
            Self::Memory(map) => {
                if let Some(waiting) = map.lock().unwrap_or_else(|p| p.into_inner()).get_mut(source) {
                    waiting.remove(&sequence);
                }
                Ok(())
            }
        }
    }

    async fn all(&self, source: &str) -> Result<Vec<Waiting>, Unavailable> {
        match self {
            Self::Redis { pool, prefix } => {
                let (due, _) = Self::keys(prefix, source);
                let mut conn = pool.get().await.map_err(redis_err)?;
                let values: Vec<String> =
                    platform::redis::client::cmd("HVALS").arg(due).query_async(&mut conn).await.map_err(redis_err)?;
                Ok(values.iter().filter_map(|v| serde_json::from_str(v).ok()).collect())
            }
            Self::Memory(map) => Ok(map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(source)
                .map(|w| w.values().map(|(waiting, _)| waiting.clone()).collect())
                .unwrap_or_default()),
        }
    }

    /// The copy of the deferred event `sequence`, if one was kept.
    async fn copy(&self, source: &str, sequence: u64) -> Result<Option<StoredEvent>, Unavailable> {
        match self {
            Self::Redis { pool, prefix } => {
                let (_, copies) = Self::keys(prefix, source);
                let mut conn = pool.get().await.map_err(redis_err)?;
                let value: Option<String> = platform::redis::client::cmd("HGET")
                    .arg(copies)
                    .arg(sequence)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
                Ok(value.and_then(|v| serde_json::from_str(&v).ok()))
            }
            Self::Memory(map) => Ok(map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(source)
                .and_then(|w| w.get(&sequence))
                .and_then(|(_, copy)| copy.clone())),
        }
    }
}

fn amqp_err(e: impl Display) -> Unavailable {
    Unavailable::new("rabbitmq", e)
}

/// The connection and the confirm-mode channel pushes share.
struct Link {
    connection: Connection,
    publish: Channel,
}

impl Link {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.publish.status().connected()
    }
}

#[derive(Default)]
struct LinkState {
    link: Option<Arc<Link>>,
    failures: u32,
    /// No attempt to connect before this, after a failed one.
    retry_at: Option<Instant>,
}

/// A delivery held unacknowledged: the message as stored, and its event's sequence when it
/// could be read.
struct Held {
    data: Vec<u8>,
    sequence: Option<u64>,
}

/// One source's pulling channel and what this instance holds unacknowledged on it.
#[derive(Default)]
struct SourceState {
    channel: Option<Channel>,
    /// Changes with every channel opened, so a claim of an earlier channel is recognised.
    epoch: u64,
    /// Delivery tag → the message as stored (what the dead letters receive).
    held: HashMap<u64, Held>,
}

impl SourceState {
    fn open_channel(&self) -> Option<&Channel> {
        self.channel.as_ref().filter(|c| c.status().connected())
    }

    /// Deliveries this instance holds; none once their channel has closed (the broker has
    /// them back).
    fn in_flight(&mut self) -> u64 {
        if self.open_channel().is_none() {
            self.held.clear();
        }
        self.held.len() as u64
    }

    /// Forgets the channel; its unacknowledged deliveries are the broker's again.
    async fn close_channel(&mut self) {
        self.held.clear();
        if let Some(channel) = self.channel.take()
            && channel.status().connected()
        {
            let _ = tokio::time::timeout(CALL_TIMEOUT, channel.close(200, "OK".into())).await;
        }
    }
}

/// [`Outbox`] on RabbitMQ; see the module documentation.
pub struct AmqpOutbox {
    url: SecretString,
    prefix: String,
    max_length: u64,
    /// The runtime that drives the connection's socket, whichever runtime calls.
    runtime: tokio::runtime::Handle,
    link: Arc<tokio::sync::Mutex<LinkState>>,
    sources: Mutex<HashMap<String, Arc<tokio::sync::Mutex<SourceState>>>>,
    epochs: AtomicU64,
    dead: Box<dyn DeadLetters>,
    ledger: Ledger,
    /// Delay queues declared by this instance.
    delays: Mutex<std::collections::HashSet<String>>,
    /// How long after it was due a deferred event may stay away before it is put back.
    rescue_after: Duration,
    /// When each source's ledger was last looked at for events to put back.
    rescue_checked: Mutex<HashMap<String, Instant>>,
}

impl AmqpOutbox {
    /// Connects lazily: the first call (normally [`Outbox::recover`] at start-up) opens the
    /// connection. Must be called inside a tokio runtime, which then drives the connection.
    pub fn new(settings: &AmqpSettings, index: AmqpIndex) -> Self {
        let (dead, ledger): (Box<dyn DeadLetters>, Ledger) = match index {
            AmqpIndex::Redis { pool, key_prefix } => {
                (Box::new(RedisDeadLetters::new(pool.clone(), &key_prefix)), Ledger::Redis { pool, prefix: key_prefix })
            }
            AmqpIndex::Spool(dir) => (Box::new(SpoolDeadLetters::new(dir)), Ledger::Memory(Mutex::default())),
        };
        Self {
            dead,
            ledger,
            delays: Mutex::default(),
            url: settings.url.clone(),
            prefix: settings.queue_prefix.clone(),
            max_length: settings.max_length,
            runtime: tokio::runtime::Handle::current(),
            link: Arc::new(tokio::sync::Mutex::new(LinkState::default())),
            sources: Mutex::new(HashMap::new()),
            epochs: AtomicU64::new(0),
            rescue_after: RESCUE_AFTER,
            rescue_checked: Mutex::default(),
        }
    }

    /// The source's queue and dead-letter queue names.
    fn names(&self, source: &str) -> Result<(ShortString, ShortString), Unavailable> {
        let queue = format!("{}{source}", self.prefix);
        let dead = format!("{queue}{DEAD_SUFFIX}");
        let name = |n: String| ShortString::try_new(n).map_err(|e| amqp_err(format!("queue name: {e}")));
        Ok((name(queue)?, name(dead)?))
    }

    fn source_state(&self, source: &str) -> Arc<tokio::sync::Mutex<SourceState>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).entry(source.to_owned()).or_default().clone()
    }

    /// Removes what the password would reveal from a message that might quote the URL.
    fn redact(&self, message: String) -> String {
        let url = self.url.expose_secret();
        let password = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, password)| password)
            .filter(|p| !p.is_empty());
        match password {
            Some(password) => message.replace(password, "***"),
            None => message,
        }
    }

    /// One broker call, bounded by [`CALL_TIMEOUT`].
    async fn call<T>(&self, what: &str, call: impl Future<Output = lapin::Result<T>>) -> Result<T, Unavailable> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(amqp_err(self.redact(format!("{what}: {e}")))),
            Err(_) => Err(amqp_err(format!("{what}: no answer within {} s", CALL_TIMEOUT.as_secs()))),
        }
    }

    async fn connect(&self) -> Result<Link, Unavailable> {
        let properties = ConnectionProperties::default().with_connection_name("portcullis-gateway".into());
        let runtime = async_rs::Runtime::tokio_with_handle(self.runtime.clone());
        let connection = self
            .call("connect", Connection::connect_with_runtime(self.url.expose_secret(), properties, runtime))
            .await?;
        let publish = self.call("channel.open", connection.create_channel()).await?;
        self.call("confirm.select", publish.confirm_select(ConfirmSelectOptions::default())).await?;
        Ok(Link { connection, publish })
    }

    /// The open connection, opened again if it was lost (with backoff between failures).
    async fn link(&self) -> Result<Arc<Link>, Unavailable> {
        let mut state = self.link.lock().await;
        if let Some(link) = state.link.as_ref().filter(|l| l.usable()) {
            return Ok(link.clone());
        }
        if state.link.take().is_some() {
            tracing::warn!("RabbitMQ connection lost; reconnecting");
        }
        if let Some(at) = state.retry_at
            && Instant::now() < at
        {
            let wait = at.saturating_duration_since(Instant::now());
            return Err(amqp_err(format!("not connected; next attempt in {} ms", wait.as_millis())));
        }
        match self.connect().await {
            Ok(link) => {
                if state.failures > 0 {
                    tracing::info!(attempts = state.failures + 1, "RabbitMQ connection restored");
                }
                let link = Arc::new(link);
                *state = LinkState { link: Some(link.clone()), failures: 0, retry_at: None };
                Ok(link)
            }
            Err(e) => {
                let wait = FIRST_RETRY.saturating_mul(1 << state.failures.min(16)).min(LAST_RETRY);
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(Instant::now() + wait);
                Err(e)
            }
        }
    }

    /// A channel for one-off calls (declarations, counts), so a refused one closes nothing
    /// else.
    async fn with_channel<T, F>(&self, work: impl FnOnce(Channel) -> F) -> Result<T, Unavailable>
    where
        F: Future<Output = Result<T, Unavailable>>,
    {
        let link = self.link().await?;
        let channel = self.call("channel.open", link.connection.create_channel()).await?;
        let result = work(channel.clone()).await;
        if channel.status().connected() {
            let _ = tokio::time::timeout(CALL_TIMEOUT, channel.close(200, "OK".into())).await;
        }
        result
    }

    fn queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        arguments
            .insert("x-max-length".into(), AMQPValue::LongLongInt(i64::try_from(self.max_length).unwrap_or(i64::MAX)));
        arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        arguments
    }

    /// Declares the source's queue and dead letters (idempotent while the arguments match).
    async fn declare(&self, source: &str) -> Result<(), Unavailable> {
        let (queue, dead) = self.names(source)?;
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        let queue_arguments = self.queue_arguments();
        let mut dead_arguments = FieldTable::default();
        dead_arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        self.with_channel(|channel| async move {
            self.call("queue.declare", channel.queue_declare(queue, durable, queue_arguments)).await?;
            self.call("queue.declare", channel.queue_declare(dead, durable, dead_arguments)).await?;
            Ok(())
        })
        .await
    }

    /// Publishes a persistent message with `mandatory` set and waits for the broker's confirm.
    async fn publish(&self, queue: ShortString, payload: &[u8], message_id: &str) -> Result<(), Unavailable> {
        self.publish_with(queue, payload, message_id, None).await
    }

    /// [`Self::publish`], expiring after `expiration` in the queue (a delay queue's message).
    async fn publish_with(
        &self,
        queue: ShortString,
        payload: &[u8],
        message_id: &str,
        expiration: Option<Duration>,
    ) -> Result<(), Unavailable> {
        let mut properties =
            BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        if let Some(expiration) = expiration {
            properties = properties.with_expiration(expiration.as_millis().max(1).to_string().into());
        }
        if let Ok(id) = ShortString::try_new(message_id) {
            properties = properties.with_message_id(id);
        }
        let returned = "its queue does not exist";
        self.confirmed("".into(), queue, payload, properties, returned, "the queue is full").await
    }

    /// One persistent, `mandatory` publish, answered once the broker confirms it; a return
    /// (no queue to route to) says `returned`, a nack `refused`.
    async fn confirmed(
        &self,
        exchange: ShortString,
        routing_key: ShortString,
        payload: &[u8],
        properties: BasicProperties,
        returned: &str,
        refused: &str,
    ) -> Result<(), Unavailable> {
        let link = self.link().await?;
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let confirm = self
            .call("basic.publish", link.publish.basic_publish(exchange, routing_key, options, payload, properties))
            .await?;
        match self.call("publisher confirm", confirm).await? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(message)) => Err(amqp_err(format!(
                "the broker returned the event ({} {}): {returned}",
                message.reply_code, message.reply_text
            ))),
            Confirmation::Nack(_) => Err(amqp_err(format!("the broker refused the event: {refused}"))),
            Confirmation::NotRequested => Err(amqp_err("publisher confirms are not enabled on the channel")),
        }
    }

    /// Hands a rendered event to broker consumers (`publish = { exchange, routing_key }`): a
    /// persistent, `mandatory` publish with confirm, its content type, message id and headers
    /// (`webhook-id`, `webhook-sequence`, the gateway's signature…) as the message's.
    pub async fn publish_event(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: &str,
        headers: &[(http::HeaderName, http::HeaderValue)],
        body: &[u8],
    ) -> Result<(), Unavailable> {
        let short = |s: &str| ShortString::try_new(s.to_owned()).map_err(|e| amqp_err(format!("name: {e}")));
        let mut table = FieldTable::default();
        let mut properties = BasicProperties::default().with_delivery_mode(2).with_message_id(short(message_id)?);
        for (name, value) in headers {
            let Ok(text) = value.to_str() else { continue };
            if name == http::header::CONTENT_TYPE {
                properties = properties.with_content_type(short(text)?);
            } else {
                table.insert(short(name.as_str())?, AMQPValue::LongString(text.into()));
            }
        }
        let properties = properties.with_headers(table);
        let returned = format!("no queue is bound to exchange `{exchange}` for routing key `{routing_key}`");
        self.confirmed(short(exchange)?, short(routing_key)?, body, properties, &returned, "a queue is full").await
    }

    /// Whether `exchange` exists (a passive declaration).
    pub async fn check_exchange(&self, exchange: &str) -> Result<(), Unavailable> {
        let name = ShortString::try_new(exchange.to_owned()).map_err(|e| amqp_err(format!("exchange name: {e}")))?;
        let passive = lapin::options::ExchangeDeclareOptions { passive: true, ..Default::default() };
        self.with_channel(|channel| async move {
            self.call(
                "exchange.declare",
                channel.exchange_declare(name, lapin::ExchangeKind::Topic, passive, FieldTable::default()),
            )
            .await
            .map(drop)
        })
        .await
    }

    /// The source's pulling channel, opened again (holding nothing) if it was closed.
    async fn source_channel(&self, state: &mut SourceState) -> Result<Channel, Unavailable> {
        if let Some(channel) = state.open_channel() {
            return Ok(channel.clone());
        }
        state.held.clear();
        let link = self.link().await?;
        let channel = self.call("channel.open", link.connection.create_channel()).await?;
        state.channel = Some(channel.clone());
        state.epoch = self.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(channel)
    }

    /// The delivery tag `claimed` holds on the source's current channel; `None` when that
    /// channel has closed since (the broker has put the event back).
    fn held_tag(state: &SourceState, claimed: &Claimed) -> Option<u64> {
        let (epoch, tag) = claimed.token().split_once(':')?;
        let (epoch, tag) = (epoch.parse::<u64>().ok()?, tag.parse::<u64>().ok()?);
        (epoch == state.epoch && state.open_channel().is_some() && state.held.contains_key(&tag)).then_some(tag)
    }

    async fn ack(&self, state: &mut SourceState, tag: u64) -> Result<(), Unavailable> {
        let channel = state.open_channel().cloned().ok_or_else(|| amqp_err("the channel closed"))?;
        let acked = self.call("basic.ack", channel.basic_ack(tag, BasicAckOptions::default())).await;
        if acked.is_err() {
            // Whatever happened to the ack, closing the channel puts the event back rather
            // than leaving it held and invisible.
            state.close_channel().await;
        } else {
            state.held.remove(&tag);
        }
        acked
    }

    /// Publishes the held delivery `tag` to the dead-letter queue as a [`DeadLetter`], indexes
    /// it, then acknowledges it.
    async fn dead_letter_held(
        &self,
        state: &mut SourceState,
        source: &str,
        tag: u64,
        letter: &DeadLetter,
    ) -> Result<(), Unavailable> {
        let (_, dead) = self.names(source)?;
        let payload = serde_json::to_vec(letter).map_err(amqp_err)?;
        self.publish(dead, &payload, &letter.event.id).await?;
        self.dead.bury(source, letter).await?;
        self.ack(state, tag).await
    }

    /// The delay queue of `tier`, declared on first use: its messages expire (each after its
    /// own wait, at most the tier plus [`DELAY_SLACK_PERCENT`]) back into the source's queue,
    /// dead-lettered at least once.
    async fn delay_queue(&self, source: &str, tier: Duration) -> Result<ShortString, Unavailable> {
        let (queue, _) = self.names(source)?;
        let tier_ms = u64::try_from(tier.as_millis()).unwrap_or(u64::MAX).max(1);
        let name = format!("{queue}{DELAY_SUFFIX}{tier_ms}");
        let short = ShortString::try_new(name.clone()).map_err(|e| amqp_err(format!("queue name: {e}")))?;
        if self.delays.lock().unwrap_or_else(|p| p.into_inner()).contains(&name) {
            return Ok(short);
        }
        let ttl = tier_ms.saturating_add(tier_ms * DELAY_SLACK_PERCENT / 100).max(1);
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(i64::try_from(ttl).unwrap_or(i64::MAX)));
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue.as_str().into()));
        arguments.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        let declared = short.clone();
        self.with_channel(|channel| async move {
            self.call("queue.declare", channel.queue_declare(declared, durable, arguments)).await.map(drop)
        })
        .await?;
        self.delays.lock().unwrap_or_else(|p| p.into_inner()).insert(name);
        Ok(short)
    }

    /// Drops a finished event's record in the ledger, if it was ever deferred.
    async fn forget_waiting(&self, source: &str, event: &StoredEvent) -> Result<(), Unavailable> {
        if event.attempt == 0 && event.parked == 0 {
            return Ok(());
        }
        self.ledger.forget(source, event.sequence).await
    }

    /// Puts back into the source's queue, from the ledger's copies, the deferred events that
    /// have not come back [`Self::rescue_after`] after they were due. RabbitMQ 3.10 recovers
    /// a vhost's queues before its exchanges, so a delay queue's message that expires while
    /// the broker boots cannot be dead-lettered and stays with the queue's dead-letter worker
    /// until its confirm timeout (`dead_letter_worker_publisher_confirm_timeout`, 180 s); a
    /// purged delay queue never brings its messages back at all. The copy put back is the
    /// event as it was deferred; if the original comes back later too, it is delivered again
    /// (at least once). Looked at no more often than every `rescue_after` (at most 5 s).
    async fn rescue_overdue(&self, source: &str) -> Result<(), Unavailable> {
        let every = self.rescue_after.min(Duration::from_secs(5));
        {
            let mut checked = self.rescue_checked.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if checked.get(source).is_some_and(|at| now < *at + every) {
                return Ok(());
            }
            checked.insert(source.to_owned(), now);
        }
        let after = i64::try_from(self.rescue_after.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let overdue: Vec<Waiting> = self
            .ledger
            .all(source)
            .await?
            .into_iter()
            .filter(|waiting| now.saturating_sub(waiting.due_ms) > after)
            .collect();
        if overdue.is_empty() {
            return Ok(());
        }
        // Back already, and held here (in flight, or behind an earlier event of its key).
        let held: std::collections::HashSet<u64> = {
            let state = self.source_state(source);
            let mut state = state.lock().await;
            state.in_flight();
            state.held.values().filter_map(|held| held.sequence).collect()
        };
        for waiting in overdue {
            if held.contains(&waiting.sequence) {
                continue;
            }
            let Some(event) = self.ledger.copy(source, waiting.sequence).await? else { continue };
            let overdue_ms = now.saturating_sub(waiting.due_ms);
            let (queue, _) = self.names(source)?;
            let payload = serde_json::to_vec(&event).map_err(amqp_err)?;
            self.publish(queue, &payload, &event.id).await?;
            // Due again later, in case this copy is lost as well.
            self.ledger.record(source, &Waiting { due_ms: now.saturating_add(after), ..waiting }, None).await?;
            tracing::warn!(
                source, id = %event.id, overdue_ms,
                "a deferred webhook event did not come back from its delay queue in time; put back into the queue"
            );
        }
        Ok(())
    }

    /// Deletes the source's queues (tests clean up after themselves).
    #[cfg(test)]
    pub async fn delete_queues(&self, source: &str) -> Result<(), Unavailable> {
        use lapin::options::QueueDeleteOptions;
        self.source_state(source).lock().await.close_channel().await;
        let (queue, dead) = self.names(source)?;
        let delays: Vec<String> = self
            .delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|name| name.starts_with(&format!("{queue}{DELAY_SUFFIX}")))
            .cloned()
            .collect();
        self.with_channel(|channel| async move {
            self.call("queue.delete", channel.queue_delete(queue, QueueDeleteOptions::default())).await?;
            self.call("queue.delete", channel.queue_delete(dead, QueueDeleteOptions::default())).await?;
            for delay in delays {
                let delay = ShortString::try_new(delay).map_err(amqp_err)?;
                self.call("queue.delete", channel.queue_delete(delay, QueueDeleteOptions::default())).await?;
            }
            Ok(())
        })
        .await
    }

    /// Empties the source's delay queues, as an operator's purge would (tests).
    #[cfg(test)]
    pub async fn purge_delay_queues(&self, source: &str) -> Result<(), Unavailable> {
        let (queue, _) = self.names(source)?;
        let delays: Vec<String> = self
            .delays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|name| name.starts_with(&format!("{queue}{DELAY_SUFFIX}")))
            .cloned()
            .collect();
        self.with_channel(|channel| async move {
            for delay in delays {
                let delay = ShortString::try_new(delay).map_err(amqp_err)?;
                self.call("queue.purge", channel.queue_purge(delay, Default::default())).await?;
            }
            Ok(())
        })
        .await
    }

    /// Closes the connection under the outbox, as a broker restart would (tests).
    #[cfg(test)]
    pub async fn sever(&self) {
        let link = self.link.lock().await.link.clone();
        if let Some(link) = link {
            let _ = link.connection.close(320, "severed by a test".into()).await;
        }
    }

    /// Messages in the source's dead letters (tests).
    #[cfg(test)]
    pub async fn dead_count(&self, source: &str) -> Result<u64, Unavailable> {
        let (_, dead) = self.names(source)?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        self.with_channel(|channel| async move {
            let queue = self.call("queue.declare", channel.queue_declare(dead, passive, FieldTable::default())).await?;
            Ok(u64::from(queue.message_count()))
        })
        .await
    }
}

#[async_trait]
impl Outbox for AmqpOutbox {
    async fn prepare(&self, source: &str) -> Result<(), Unavailable> {
        self.declare(source).await
    }

    async fn recover(&self, source: &str) -> Result<u64, Unavailable> {
        self.declare(source).await?;
        // What this instance claimed and did not finish goes back by closing its channel.
        self.source_state(source).lock().await.close_channel().await;
        self.pending(source).await
    }

    async fn push(&self, event: &StoredEvent) -> Result<(), Unavailable> {
        let payload = serde_json::to_vec(event).map_err(amqp_err)?;
        let (queue, _) = self.names(&event.source)?;
        let published = self.publish(queue, &payload, &event.id).await;
        if let Err(e) = &published
            && e.message.contains("does not exist")
        {
            // Someone deleted the queue: declare it again so the sender's retry succeeds.
            if let Err(declare) = self.declare(&event.source).await {
                tracing::warn!(source = %event.source, error = %declare, "cannot declare the webhook queue again");
            }
        }
        published
    }

    async fn claim(&self, source: &str) -> Result<Option<Claimed>, Unavailable> {
        // Only claiming drains the queue: a put-back the broker refuses (the queue is full)
        // waits for the next look, claiming goes on.
        if let Err(e) = self.rescue_overdue(source).await {
            tracing::warn!(source, error = %e, "cannot put an overdue deferred webhook event back yet; retrying");
        }
        let (queue, _) = self.names(source)?;
        let state = self.source_state(source);
        let mut state = state.lock().await;
        loop {
            let channel = self.source_channel(&mut state).await?;
            let got = self.call("basic.get", channel.basic_get(queue.clone(), BasicGetOptions { no_ack: false })).await;
            let message = match got {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(None),
                Err(e) => {
                    // A get that timed out may still deliver; closing the channel returns it.
                    state.close_channel().await;
                    return Err(e);
                }
            };
            let tag = message.delivery.delivery_tag;
            let data = message.delivery.data;
            let parsed = serde_json::from_slice::<StoredEvent>(&data);
            state.held.insert(tag, Held { data, sequence: parsed.as_ref().ok().map(|event| event.sequence) });
            match parsed {
                Ok(event) => return Ok(Some(Claimed::new(event, format!("{}:{tag}", state.epoch)))),
                Err(e) => {
                    tracing::error!(source, error = %e, "unreadable webhook message moved to the dead letters");
                    let letter = DeadLetter {
                        event: super::outbox::unreadable(
                            source,
                            state.held.get(&tag).map_or(&[][..], |held| held.data.as_slice()),
                        ),
                        reason: format!("unreadable: {e}"),
                        dead_at_ms: now_ms(),
                    };
                    if let Err(e) = self.dead_letter_held(&mut state, source, tag, &letter).await {
                        state.close_channel().await;
                        return Err(e);
                    }
                }
            }
        }
    }

    async fn complete(&self, source: &str, claimed: &Claimed) -> Result<Settled, Unavailable> {
        let state = self.source_state(source);
        let mut state = state.lock().await;
        let Some(tag) = Self::held_tag(&state, claimed) else {
            tracing::warn!(source, id = %claimed.event.id, "webhook event's channel closed before its ack; it will be delivered again");
            return Ok(Settled::Lapsed);
        };
        // The record of an earlier deferral goes first: an ack that fails after it puts the
        // event back in the work queue, where no record is needed.
        self.forget_waiting(source, &claimed.event).await?;
        self.ack(&mut state, tag).await.map(|()| Settled::Done)
    }

    async fn defer(
        &self,
        source: &str,
        claimed: &Claimed,
        event: &StoredEvent,
        delay: Delay,
    ) -> Result<Settled, Unavailable> {
        let queue = self.delay_queue(source, delay.tier).await?;
        let state = self.source_state(source);
        let mut state = state.lock().await;
        let Some(tag) = Self::held_tag(&state, claimed) else {
            tracing::warn!(source, id = %claimed.event.id, "webhook event's channel closed before it was deferred; it will be tried again");
            return Ok(Settled::Lapsed);
        };
        // Recorded first: a crash before the ack leaves the event in the queue as well, where
        // its own record does not hold it back.
        let due = now_ms().saturating_add(i64::try_from(delay.wait.as_millis()).unwrap_or(i64::MAX));
        self.ledger.record(source, &event.waiting(due), Some(event)).await?;
        let payload = serde_json::to_vec(event).map_err(amqp_err)?;
        self.publish_with(queue, &payload, &event.id, Some(delay.wait)).await?;
        self.ack(&mut state, tag).await.map(|()| Settled::Done)
    }

    async fn dead_letter(&self, source: &str, claimed: &Claimed, reason: &str) -> Result<Settled, Unavailable> {
        let state = self.source_state(source);
        let mut state = state.lock().await;
        let Some(tag) = Self::held_tag(&state, claimed) else {
            // Back in the queue: it is refused again, then set aside, on its next delivery.
            tracing::warn!(source, id = %claimed.event.id, "webhook event's channel closed before it was set aside; it will be tried again");
            return Ok(Settled::Lapsed);
        };
        let letter = DeadLetter { event: claimed.event.clone(), reason: reason.to_owned(), dead_at_ms: now_ms() };
        self.forget_waiting(source, &claimed.event).await?;
        self.dead_letter_held(&mut state, source, tag, &letter).await.map(|()| Settled::Done)
    }

    async fn holds(&self, source: &str, claimed: &Claimed) -> bool {
        Self::held_tag(&*self.source_state(source).lock().await, claimed).is_some()
    }

    async fn waiting(&self, source: &str) -> Result<Vec<Waiting>, Unavailable> {
        self.ledger.all(source).await
    }

    fn dead_letters(&self) -> &dyn DeadLetters {
        self.dead.as_ref()
    }

    /// Well under the broker's `consumer_timeout` (30 minutes by default).
    fn max_hold(&self) -> Option<Duration> {
        Some(MAX_HOLD)
    }

    async fn pending(&self, source: &str) -> Result<u64, Unavailable> {
        let (queue, _) = self.names(source)?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let ready = self
            .with_channel(|channel| async move {
                let queue =
                    self.call("queue.declare", channel.queue_declare(queue, passive, FieldTable::default())).await?;
                Ok(u64::from(queue.message_count()))
            })
            .await?;
        let held = self.source_state(source).lock().await.in_flight();
        let waiting = self.ledger.all(source).await?.len() as u64;
        Ok(ready + held + waiting)
    }

    /// Closes the connection (its deliveries go back to their queues); the next call opens
    /// a new one.
    ///
    /// What is free is let go at once (dropping the last handle closes the connection without
    /// waiting for the broker). A source whose state a call still holds (a worker stopped
    /// inside a broker call) and the connection are let go by a task once they are free, and
    /// the connection is closed explicitly, so its deliveries go back even while this
    /// instance lives on.
    fn release(&self) {
        let mut busy = Vec::new();
        for state in self.sources.lock().unwrap_or_else(|p| p.into_inner()).values() {
            match state.try_lock() {
                Ok(mut state) => {
                    state.held.clear();
                    state.channel = None;
                }
                Err(_) => busy.push(state.clone()),
            }
        }
        let taken = self.link.try_lock().ok().map(|mut state| state.link.take());
        let link = self.link.clone();
        self.runtime.spawn(async move {
            for state in busy {
                let mut state = state.lock().await;
                state.held.clear();
                state.channel = None;
            }
            let current = match taken {
                Some(taken) => taken,
                None => link.lock().await.link.take(),
            };
            if let Some(current) = current {
                let _ = tokio::time::timeout(CALL_TIMEOUT, current.connection.close(200, "released".into())).await;
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn settings(url: &str) -> AmqpSettings {
        AmqpSettings {
            url: SecretString::from(url.to_owned()),
            queue_prefix: format!("pc_test.{}.", uuid::Uuid::new_v4().simple()),
            max_length: DEFAULT_MAX_LENGTH,
        }
    }

    /// An outbox whose dead-letter index is a fresh directory.
    fn open(settings: &AmqpSettings) -> AmqpOutbox {
        let index = std::env::temp_dir().join(format!("pc-amqp-index-{}", uuid::Uuid::new_v4().simple()));
        AmqpOutbox::new(settings, AmqpIndex::Spool(index))
    }

    /// The next event of `billing`, claimed within 10 s, or a failure saying `never`.
    async fn claim_within(outbox: &AmqpOutbox, never: &str) -> Claimed {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(claimed) = outbox.claim("billing").await.unwrap() {
                return claimed;
            }
            assert!(Instant::now() < deadline, "{never}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn event(id: &str) -> StoredEvent {
        StoredEvent::new(id.to_owned(), "billing".to_owned(), 1_700_000_000, None, Vec::new(), b"{}")
    }

    #[tokio::test]
    async fn a_broker_that_is_down_is_unavailable_quickly_and_the_password_never_shows() {
        // Nothing listens on port 1.
        let outbox = open(&settings("amqp://gw:hunter2@127.0.0.1:1/%2f"));
        let started = Instant::now();
        let first = outbox.push(&event("a")).await.unwrap_err();
        assert_eq!(first.dependency, "rabbitmq");
        assert!(!first.to_string().contains("hunter2"), "{first}");
        // Within the backoff, calls fail at once instead of dialling again.
        for result in [
            outbox.push(&event("b")).await.map(drop),
            outbox.claim("billing").await.map(drop),
            outbox.pending("billing").await.map(drop),
            outbox.recover("billing").await.map(drop),
        ] {
            let e = result.unwrap_err();
            assert!(e.message.contains("next attempt"), "{e}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        assert!(started.elapsed() < CALL_TIMEOUT * 2, "{:?}", started.elapsed());
        outbox.release();
    }

    #[test]
    fn the_password_is_redacted_from_messages() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _guard = runtime.enter();
        let outbox = open(&settings("amqp://gw:hunter2@rabbit:5672/%2f"));
        assert_eq!(outbox.redact("bad uri amqp://gw:hunter2@rabbit".to_owned()), "bad uri amqp://gw:***@rabbit");
        let outbox = open(&settings("amqp://rabbit:5672/%2f"));
        assert_eq!(outbox.redact("plain".to_owned()), "plain");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_credentials_are_unavailable_without_the_password() {
        let Some(url) = testkit::amqp_url() else { return };
        let host = url.split_once('@').map_or(url.trim_start_matches("amqp://"), |(_, host)| host);
        let outbox = open(&settings(&format!("amqp://nobody:hunter2@{host}")));
        let e = outbox.recover("billing").await.unwrap_err();
        assert_eq!(e.dependency, "rabbitmq");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_changed_bound_is_refused_at_start_up_naming_the_argument() {
        let Some(url) = testkit::amqp_url() else { return };
        let first = settings(&url);
        let outbox = open(&first);
        outbox.recover("billing").await.unwrap();
        let changed = open(&AmqpSettings { max_length: first.max_length + 1, ..first.clone() });
        let e = changed.recover("billing").await.unwrap_err();
        assert!(e.message.contains("PRECONDITION_FAILED") && e.message.contains("x-max-length"), "{e}");
        // The same settings again are fine.
        assert_eq!(open(&first).recover("billing").await.unwrap(), 0);
        outbox.delete_queues("billing").await.unwrap();
    }

    /// RabbitMQ 3.10 starts its queues before their exchanges: a delay queue's message that
    /// expires while the broker boots finds no dead-letter exchange and stays with the queue's
    /// dead-letter worker until its confirm timeout (180 s by default), holding its key back
    /// that long. An operator may purge a delay queue too. Either way the deferred event must
    /// come back soon after it was due, from the ledger's copy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deferral_the_broker_does_not_bring_back_is_put_back_into_the_queue() {
        let Some(url) = testkit::amqp_url() else { return };
        put_back(open(&settings(&url))).await;
        // The distributed ledger: due times and copies in Redis.
        let Some(testkit::Backend::Postgres { redis_url, .. }) = testkit::Backend::shared() else { return };
        let pool = platform::redis::connect(&redis_url).await.unwrap();
        let key_prefix = format!("pc_test:{}:", uuid::Uuid::new_v4().simple());
        put_back(AmqpOutbox::new(&settings(&url), AmqpIndex::Redis { pool, key_prefix })).await;
    }

    async fn put_back(mut outbox: AmqpOutbox) {
        outbox.rescue_after = Duration::from_millis(500);
        outbox.recover("billing").await.unwrap();
        outbox.push(&event("a")).await.unwrap();
        let claimed = outbox.claim("billing").await.unwrap().unwrap();
        let mut next = claimed.event.clone();
        next.attempt = 1;
        let delay = Delay::exactly(Duration::from_secs(1));
        assert_eq!(outbox.defer("billing", &claimed, &next, delay).await.unwrap(), Settled::Done);
        // The broker never brings it back.
        outbox.purge_delay_queues("billing").await.unwrap();

        let back = claim_within(&outbox, "the deferred event never came back").await;
        assert_eq!((back.event.id.as_str(), back.event.attempt), ("a", 1), "the event as it was deferred");
        assert_eq!(outbox.complete("billing", &back).await.unwrap(), Settled::Done);
        assert!(outbox.waiting("billing").await.unwrap().is_empty(), "finished: no longer waiting");
        // Put back once: nothing else comes.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(outbox.claim("billing").await.unwrap().is_none());
        assert_eq!(outbox.pending("billing").await.unwrap(), 0);
        outbox.delete_queues("billing").await.unwrap();
    }

    /// The workers stop while one of them is inside a call on the source (its state locked):
    /// what this instance held must still go back to the queue for another instance, though
    /// this one stays alive (a gateway whose webhooks stopped while its server still runs).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_release_while_a_call_is_busy_still_gives_back_what_was_held() {
        let Some(url) = testkit::amqp_url() else { return };
        let settings = settings(&url);
        let first = open(&settings);
        first.recover("billing").await.unwrap();
        first.push(&event("a")).await.unwrap();
        let claimed = first.claim("billing").await.unwrap().unwrap();
        assert_eq!(claimed.event.id, "a");
        let state = first.source_state("billing");
        let busy = state.lock().await;
        first.release();
        drop(busy);

        let second = open(&settings);
        let again = claim_within(&second, "the released delivery never came back").await;
        assert_eq!(again.event.id, "a");
        second.complete("billing", &again).await.unwrap();
        drop(first);
        second.delete_queues("billing").await.unwrap();
    }

    /// Putting an event back can fail (the work queue is full); claiming goes on regardless,
    /// since only claiming drains the queue, and the event is put back once there is room.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_that_refuses_a_put_back_event_is_still_claimed_from() {
        let Some(url) = testkit::amqp_url() else { return };
        let mut outbox = open(&AmqpSettings { max_length: 1, ..settings(&url) });
        outbox.rescue_after = Duration::from_millis(300);
        outbox.recover("billing").await.unwrap();
        outbox.push(&event("a")).await.unwrap();
        let claimed = outbox.claim("billing").await.unwrap().unwrap();
        let mut next = claimed.event.clone();
        next.attempt = 1;
        outbox.defer("billing", &claimed, &next, Delay::exactly(Duration::from_millis(500))).await.unwrap();
        outbox.purge_delay_queues("billing").await.unwrap();
        // Over the bound: the next publish is refused.
        outbox.push(&event("b")).await.unwrap();
        outbox.push(&event("c")).await.unwrap();
        let refused = outbox.push(&event("d")).await.unwrap_err();
        assert!(refused.message.contains("full"), "{refused}");
        tokio::time::sleep(Duration::from_millis(1_200)).await;

        let mut ids = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ids.len() < 3 {
            assert!(Instant::now() < deadline, "claimed only {ids:?}");
            match outbox.claim("billing").await {
                Ok(Some(claimed)) => {
                    ids.push(claimed.event.id.clone());
                    outbox.complete("billing", &claimed).await.unwrap();
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("claiming stopped while the queue was full: {e}"),
            }
        }
        assert_eq!(ids, ["b", "c", "a"], "the queue drains first, then the event is put back");
        assert_eq!(outbox.pending("billing").await.unwrap(), 0);
        outbox.delete_queues("billing").await.unwrap();
    }

    /// A deferred event that came back and is held (in flight for a long delivery) is not put
    /// back a second time however late it is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deferral_back_and_held_is_not_put_back_again() {
        let Some(url) = testkit::amqp_url() else { return };
        let mut outbox = open(&settings(&url));
        outbox.rescue_after = Duration::from_millis(300);
        outbox.recover("billing").await.unwrap();
        outbox.push(&event("a")).await.unwrap();
        let claimed = outbox.claim("billing").await.unwrap().unwrap();
        let mut next = claimed.event.clone();
        next.attempt = 1;
        outbox.defer("billing", &claimed, &next, Delay::exactly(Duration::from_millis(200))).await.unwrap();
        let back = claim_within(&outbox, "the deferred event never came back").await;
        // Held well past its time while its ledger record remains.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert!(outbox.claim("billing").await.unwrap().is_none(), "no second copy while one is held");
        assert_eq!(outbox.complete("billing", &back).await.unwrap(), Settled::Done);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(outbox.claim("billing").await.unwrap().is_none());
        assert_eq!(outbox.pending("billing").await.unwrap(), 0);
        outbox.delete_queues("billing").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_connection_is_opened_again_and_what_was_in_flight_comes_back() {
        let Some(url) = testkit::amqp_url() else { return };
        let outbox = open(&settings(&url));
        outbox.recover("billing").await.unwrap();
        outbox.push(&event("a")).await.unwrap();
        let claimed = outbox.claim("billing").await.unwrap().unwrap();
        assert_eq!(claimed.event.id, "a");
        assert!(outbox.holds("billing", &claimed).await);

        outbox.sever().await;
        // The ack can no longer be given; the broker has the event back, so it is not lost.
        assert!(!outbox.holds("billing", &claimed).await);
        assert_eq!(outbox.complete("billing", &claimed).await.unwrap(), Settled::Lapsed);
        outbox.push(&event("b")).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while outbox.pending("billing").await.unwrap() != 2 {
            assert!(Instant::now() < deadline, "the severed delivery never came back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut ids = Vec::new();
        while let Some(claimed) = outbox.claim("billing").await.unwrap() {
            ids.push(claimed.event.id.clone());
            outbox.complete("billing", &claimed).await.unwrap();
        }
        assert_eq!(ids, ["a", "b"]);

        // A dead-lettering cut short the same way is tried again on the next delivery.
        outbox.push(&event("poison")).await.unwrap();
        let claimed = outbox.claim("billing").await.unwrap().unwrap();
        outbox.sever().await;
        assert_eq!(outbox.dead_letter("billing", &claimed, "refused").await.unwrap(), Settled::Lapsed);
        let again = claim_within(&outbox, "the severed delivery never came back").await;
        assert_eq!(again.event.id, "poison");
        outbox.dead_letter("billing", &again, "refused").await.unwrap();
        assert_eq!(outbox.dead_count("billing").await.unwrap(), 1, "set aside once");
        assert_eq!(outbox.pending("billing").await.unwrap(), 0);
        outbox.delete_queues("billing").await.unwrap();
    }
}
