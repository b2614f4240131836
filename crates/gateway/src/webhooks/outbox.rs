//! The durable outbox of accepted events, one queue per source: Redis in distributed mode, a
//! spool directory of fsynced files in embedded mode, or RabbitMQ quorum queues when
//! `AMQP_URL` is set (`super::amqp`). An event is acknowledged to its sender only once it is
//! here. Besides the queue, each backend keeps the events waiting for a retry (deferred, out
//! of the queue, so nothing is held unacknowledged while it waits) and the dead letters with
//! an index an operator can list and replay from ([`DeadLetters`]).

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use deadpool_redis::Pool;
use platform::{Unavailable, redis::client};
use serde::{Deserialize, Serialize};

/// An accepted event as stored: everything the worker needs to forward it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The id answered to the sender and forwarded as `webhook-id`.
    pub id: String,
    pub source: String,
    /// Unix seconds at acceptance.
    pub received_at: i64,
    pub content_type: Option<String>,
    /// Further headers passed on to the upstream (signature, timestamp).
    pub headers: Vec<(String, String)>,
    /// The raw body, base64, so a binary body survives JSON.
    body: String,
    /// The ordering key (`None`: unordered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Strictly increasing per source in acceptance order, so per key too.
    #[serde(default)]
    pub sequence: u64,
    /// Failed delivery attempts so far.
    #[serde(default)]
    pub attempt: u32,
    /// Times it was set aside behind an earlier event of its key (RabbitMQ only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parked: u32,
    /// Unix milliseconds before which it is not delivered (a deferred event; spool only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    /// Set when the event is stored only to be kept in the dead letters, undelivered: the
    /// reason they record (its payload failed the source's schema under
    /// `on_schema_failure = "dead_letter"`: `schema: <first failure>`). A replay clears it.
    /// Absent in events stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StoredEvent {
    pub fn new(
        id: String,
        source: String,
        received_at: i64,
        content_type: Option<String>,
        headers: Vec<(String, String)>,
        body: &[u8],
    ) -> Self {
        Self {
            id,
            source,
            received_at,
            content_type,
            headers,
            body: BASE64.encode(body),
            key: None,
            sequence: 0,
            attempt: 0,
            parked: 0,
            not_before_ms: None,
            refusal: None,
        }
    }

    /// The same event kept for the dead letters with `reason`, never delivered as it is.
    #[must_use]
    pub fn refused(mut self, reason: String) -> Self {
        self.refusal = Some(reason);
        self
    }

    /// The same event ordered by `key` with its `sequence`.
    #[must_use]
    pub fn ordered(mut self, key: Option<String>, sequence: u64) -> Self {
        self.key = key;
        self.sequence = sequence;
        self
    }

    pub fn body(&self) -> Result<Bytes, String> {
        BASE64.decode(&self.body).map(Bytes::from).map_err(|e| format!("stored body is not base64: {e}"))
    }

    /// What it waits as, when it is out of the queue until `due_ms`.
    pub fn waiting(&self, due_ms: i64) -> Waiting {
        Waiting { key: self.key.clone(), sequence: self.sequence, due_ms }
    }

    /// The same event as a dead letter gives it back for a replay: attempts start over, and
    /// a refusal is lifted (the operator's replay is the decision to deliver it).
    #[must_use]
    pub fn revived(mut self) -> Self {
        self.attempt = 0;
        self.parked = 0;
        self.not_before_ms = None;
        self.refusal = None;
        self
    }
}

/// An event taken from the queue and not yet delivered.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub event: StoredEvent,
    /// The stored form (Redis: the list item itself; spool: the file name) that identifies
    /// it for removal.
    token: String,
}

impl Claimed {
    /// For a backend in a sibling module (RabbitMQ: the channel's epoch and delivery tag).
    pub(super) fn new(event: StoredEvent, token: String) -> Self {
        Self { event, token }
    }

    pub(super) fn token(&self) -> &str {
        &self.token
    }
}

/// What became of a step taken on a claimed event ([`Outbox::complete`], [`Outbox::defer`],
/// [`Outbox::dead_letter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Done as asked.
    Done,
    /// Not done: the claim had lapsed (on RabbitMQ its channel closed), so the event is back
    /// in the queue as it was stored, with everything else that claim's channel held, and
    /// will be claimed again.
    Lapsed,
}

/// How long a deferred event stays out of the queue: `wait`, one step of a schedule whose
/// nominal value is `tier` (RabbitMQ keeps one delay queue per tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    pub wait: Duration,
    pub tier: Duration,
}

impl Delay {
    #[cfg(test)]
    pub fn exactly(wait: Duration) -> Self {
        Self { wait, tier: wait }
    }
}

/// An event out of the queue until `due_ms` (a retry, or on RabbitMQ one parked behind an
/// earlier event of its key); after a restart or a takeover the dispatcher learns from these
/// which keys are still busy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub key: Option<String>,
    pub sequence: u64,
    /// Unix milliseconds.
    pub due_ms: i64,
}

/// An event given up on: the upstream refused it, its attempts ran out, its payload failed
/// the source's schema ([`StoredEvent::refusal`]), or it could not be read. Kept until an operator replays or deletes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub event: StoredEvent,
    pub reason: String,
    /// Unix milliseconds.
    pub dead_at_ms: i64,
}

/// The dead letters of each source, indexed by event id, so an operator can list, read and
/// replay one without going through a whole queue (`cargo xtask webhooks dead …`).
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Keeps `letter`; an id already there is kept beside it under `<id>.<dead_at_ms>`.
    async fn bury(&self, source: &str, letter: &DeadLetter) -> Result<(), Unavailable>;
    /// Every dead letter of the source with the name it is indexed under, oldest first.
    async fn list(&self, source: &str) -> Result<Vec<(String, DeadLetter)>, Unavailable>;
    /// Removes and returns the dead letter indexed as `name`.
    async fn take(&self, source: &str, name: &str) -> Result<Option<DeadLetter>, Unavailable>;
}

#[async_trait]
pub trait Outbox: Send + Sync {
    /// Makes the source's queue ready to take pushes (RabbitMQ: declares its queues), without
    /// touching what another instance holds.
    async fn prepare(&self, _source: &str) -> Result<(), Unavailable> {
        Ok(())
    }
    /// Prepares the source's queue at start-up and puts back events a previous run had
    /// claimed but not finished; returns how many are pending.
    async fn recover(&self, source: &str) -> Result<u64, Unavailable>;
    /// Stores durably; once this returns `Ok` the event survives a crash.
    async fn push(&self, event: &StoredEvent) -> Result<(), Unavailable>;
    /// The next event to deliver, marked in flight: a deferred one whose time has come, else
    /// the oldest in the queue; `None` when there is none. Several may be in flight at once.
    async fn claim(&self, source: &str) -> Result<Option<Claimed>, Unavailable>;
    /// Removes a delivered event.
    async fn complete(&self, source: &str, claimed: &Claimed) -> Result<Settled, Unavailable>;
    /// Takes a claimed event out of the queue, stored as `event` (its attempt or park count
    /// updated), until `delay` has passed; then [`Outbox::claim`] returns it again.
    async fn defer(
        &self,
        source: &str,
        claimed: &Claimed,
        event: &StoredEvent,
        delay: Delay,
    ) -> Result<Settled, Unavailable>;
    /// Moves an event aside for good, kept in the dead letters for an operator.
    async fn dead_letter(&self, source: &str, claimed: &Claimed, reason: &str) -> Result<Settled, Unavailable>;
    /// Whether `claimed` is still this instance's to finish; `false` once its claim has
    /// lapsed (see [`Settled::Lapsed`]). Claims in Redis and the spool hold until released.
    async fn holds(&self, _source: &str, _claimed: &Claimed) -> bool {
        true
    }
    /// The deferred events (for the order of their keys after a restart or takeover).
    async fn waiting(&self, source: &str) -> Result<Vec<Waiting>, Unavailable>;
    /// The dead-letter index.
    fn dead_letters(&self) -> &dyn DeadLetters;
    /// Events not yet delivered, in flight and deferred included.
    async fn pending(&self, source: &str) -> Result<u64, Unavailable>;
    /// How long a claimed event may stay claimed while it waits behind an earlier event of
    /// its key; `None`: as long as it takes. RabbitMQ closes a channel that holds a delivery
    /// past its consumer timeout, so there an event that would wait longer is deferred.
    fn max_hold(&self) -> Option<Duration> {
        None
    }
    /// Lets go of what this instance holds in flight, so another instance (or the next
    /// start) can take it; called when the workers stop. A later call works again.
    fn release(&self) {}
}

/// Puts the dead letter indexed as `name` back in its source's queue, attempts starting
/// over; `false` when there is no such dead letter. A push that fails buries it again.
pub async fn replay(outbox: &dyn Outbox, source: &str, name: &str) -> Result<bool, Unavailable> {
    let Some(letter) = outbox.dead_letters().take(source, name).await? else { return Ok(false) };
    if let Err(e) = outbox.push(&letter.event.clone().revived()).await {
        outbox.dead_letters().bury(source, &letter).await?;
        return Err(e);
    }
    Ok(true)
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    i64::try_from(platform::clock::Clock::now(&platform::clock::SystemClock).unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn due_after(delay: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
}

/// A claimed item that could not be read, as a dead letter keeps it.
pub(super) fn unreadable(source: &str, raw: &[u8]) -> StoredEvent {
    let mut event = StoredEvent::new(String::new(), source.to_owned(), 0, None, Vec::new(), raw);
    event.id = format!("unreadable-{}", uuid::Uuid::new_v4().simple());
    event
}

fn redis_err(e: impl std::fmt::Display) -> Unavailable {
    Unavailable::new("redis", e)
}

/// The dead letters in Redis: hash `<prefix>webhooks:dead-letters:<source>`, event id →
/// [`DeadLetter`] JSON.
pub struct RedisDeadLetters {
    pool: Pool,
    prefix: String,
}

impl RedisDeadLetters {
    pub fn new(pool: Pool, key_prefix: &str) -> Self {
        Self { pool, prefix: format!("{key_prefix}webhooks:dead-letters:") }
    }
}

/// `HSETNX` under the id, else beside it under `<id>.<dead_at_ms>`.
const BURY: &str = r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[1] .. '.' .. ARGV[2], ARGV[3])
end
return 1";

#[async_trait]
impl DeadLetters for RedisDeadLetters {
    async fn bury(&self, source: &str, letter: &DeadLetter) -> Result<(), Unavailable> {
        let json = serde_json::to_string(letter).map_err(redis_err)?;
        let mut conn = self.pool.get().await.map_err(redis_err)?;
        client::Script::new(BURY)
            .key(format!("{}{source}", self.prefix))
            .arg(&letter.event.id)
            .arg(letter.dead_at_ms)
            .arg(json)
            .invoke_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(redis_err)
    }

    async fn list(&self, source: &str) -> Result<Vec<(String, DeadLetter)>, Unavailable> {
        let mut conn = self.pool.get().await.map_err(redis_err)?;
        let all: Vec<(String, String)> = client::cmd("HGETALL")
            .arg(format!("{}{source}", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let mut letters: Vec<(String, DeadLetter)> = all
            .into_iter()
            .map(|(name, json)| {
                let letter = serde_json::from_str(&json).unwrap_or_else(|e| DeadLetter {
                    event: unreadable(source, json.as_bytes()),
                    reason: format!("unreadable dead letter: {e}"),
                    dead_at_ms: 0,
                });
                (name, letter)
            })
            .collect();
        letters.sort_by(|a, b| (a.1.dead_at_ms, &a.0).cmp(&(b.1.dead_at_ms, &b.0)));
        Ok(letters)
    }

    async fn take(&self, source: &str, name: &str) -> Result<Option<DeadLetter>, Unavailable> {
        const TAKE: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v";
        let mut conn = self.pool.get().await.map_err(redis_err)?;
        let json: Option<String> = client::Script::new(TAKE)
            .key(format!("{}{source}", self.prefix))
            .arg(name)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        json.map(|json| serde_json::from_str(&json).map_err(redis_err)).transpose()
    }
}

/// Lists `<prefix>webhooks:{queue,processing}:<source>` and the sorted set
/// `…:delayed:<source>` (deferred items scored by when they are due). New events are
/// `LPUSH`ed; a claim moves a due deferred item, else the oldest queued one, to `processing`
/// in one script, and the item is `LREM`ed from there when it is finished. The worker polls
/// rather than blocking on `BLMOVE`, so it never holds a pooled connection; a local push
/// wakes it at once.
pub struct RedisOutbox {
    pool: Pool,
    prefix: String,
    dead: RedisDeadLetters,
}

/// A due deferred item first, else the oldest queued one, onto `processing`.
const CLAIM: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, 1)
if due[1] then
  redis.call('ZREM', KEYS[3], due[1])
  redis.call('LPUSH', KEYS[2], due[1])
  return due[1]
end
return redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')";

impl RedisOutbox {
    pub fn new(pool: Pool, key_prefix: &str) -> Self {
        Self { dead: RedisDeadLetters::new(pool.clone(), key_prefix), pool, prefix: format!("{key_prefix}webhooks:") }
    }

    fn key(&self, list: &str, source: &str) -> String {
        format!("{}{list}:{source}", self.prefix)
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, Unavailable> {
        self.pool.get().await.map_err(redis_err)
    }

    async fn unclaim(&self, source: &str, token: &str) -> Result<(), Unavailable> {
        let mut conn = self.conn().await?;
        client::cmd("LREM")
            .arg(self.key("processing", source))
            .arg(1)
            .arg(token)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(redis_err)
    }
}

#[async_trait]
impl Outbox for RedisOutbox {
    async fn recover(&self, source: &str) -> Result<u64, Unavailable> {
        let mut conn = self.conn().await?;
        // Newest claimed first onto the consuming end, so the oldest is retried first.
        loop {
            let moved: Option<String> = client::cmd("LMOVE")
                .arg(self.key("processing", source))
                .arg(self.key("queue", source))
                .arg("LEFT")
                .arg("RIGHT")
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            if moved.is_none() {
                break;
            }
        }
        drop(conn);
        self.pending(source).await
    }

    async fn push(&self, event: &StoredEvent) -> Result<(), Unavailable> {
        let item = serde_json::to_string(event).map_err(redis_err)?;
        let mut conn = self.conn().await?;
        // Durability is Redis's own (AOF/replication settings of the deployment).
        client::cmd("LPUSH")
            .arg(self.key("queue", &event.source))
            .arg(item)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(redis_err)
    }

    async fn claim(&self, source: &str) -> Result<Option<Claimed>, Unavailable> {
        loop {
            let mut conn = self.conn().await?;
            let item: Option<String> = client::Script::new(CLAIM)
                .key(self.key("queue", source))
                .key(self.key("processing", source))
                .key(self.key("delayed", source))
                .arg(now_ms())
                .invoke_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let Some(item) = item else { return Ok(None) };
            drop(conn);
            match serde_json::from_str(&item) {
                Ok(event) => return Ok(Some(Claimed { event, token: item })),
                Err(e) => {
                    // An item this version cannot read is kept aside rather than dropped or
                    // retried forever in front of the others.
                    tracing::error!(source, error = %e, "unreadable webhook outbox item moved to the dead letters");
                    let bad = Claimed { event: unreadable(source, item.as_bytes()), token: item };
                    self.dead_letter(source, &bad, &format!("unreadable: {e}")).await?;
                }
            }
        }
    }

    async fn complete(&self, source: &str, claimed: &Claimed) -> Result<Settled, Unavailable> {
        self.unclaim(source, &claimed.token).await.map(|()| Settled::Done)
    }

    async fn defer(
        &self,
        source: &str,
        claimed: &Claimed,
        event: &StoredEvent,
        delay: Delay,
    ) -> Result<Settled, Unavailable> {
        let item = serde_json::to_string(event).map_err(redis_err)?;
        let mut conn = self.conn().await?;
        client::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(self.key("delayed", source))
            .arg(due_after(delay.wait))
            .arg(item)
            .ignore()
            .cmd("LREM")
            .arg(self.key("processing", source))
            .arg(1)
            .arg(&claimed.token)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map(|()| Settled::Done)
            .map_err(redis_err)
    }

    async fn dead_letter(&self, source: &str, claimed: &Claimed, reason: &str) -> Result<Settled, Unavailable> {
        let letter = DeadLetter { event: claimed.event.clone(), reason: reason.to_owned(), dead_at_ms: now_ms() };
        // Buried first: a crash in between leaves it both buried and claimed, so it is
        // delivered or buried once more, never lost.
        self.dead.bury(source, &letter).await?;
        self.unclaim(source, &claimed.token).await.map(|()| Settled::Done)
    }

    async fn waiting(&self, source: &str) -> Result<Vec<Waiting>, Unavailable> {
        let mut conn = self.conn().await?;
        let items: Vec<(String, i64)> = client::cmd("ZRANGE")
            .arg(self.key("delayed", source))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(items
            .into_iter()
            .filter_map(|(item, due)| serde_json::from_str::<StoredEvent>(&item).ok().map(|e| e.waiting(due)))
            .collect())
    }

    fn dead_letters(&self) -> &dyn DeadLetters {
        &self.dead
    }

    async fn pending(&self, source: &str) -> Result<u64, Unavailable> {
        let mut conn = self.conn().await?;
        let (queued, processing, delayed): (u64, u64, u64) = client::pipe()
            .cmd("LLEN")
            .arg(self.key("queue", source))
            .cmd("LLEN")
            .arg(self.key("processing", source))
            .cmd("ZCARD")
            .arg(self.key("delayed", source))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(queued + processing + delayed)
    }
}

fn spool_err(e: impl std::fmt::Display) -> Unavailable {
    Unavailable::new("spool", e)
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `data` to `dir/name` all or nothing: a `.tmp` file, fsynced, renamed over the
/// name, the directory fsynced.
fn write_atomically(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    file.write_all(data)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Unavailable> {
    tokio::task::spawn_blocking(work).await.map_err(spool_err)?.map_err(spool_err)
}

/// The dead letters on disk: `<dir>/<source>/dead/<name>.json`, one [`DeadLetter`] per file
/// (a bare event, as an earlier version wrote them, reads as one with an unknown reason).
pub struct SpoolDeadLetters {
    dir: PathBuf,
}

impl SpoolDeadLetters {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn dead_dir(&self, source: &str) -> PathBuf {
        self.dir.join(source).join("dead")
    }
}

fn read_letter(source: &str, data: &[u8]) -> DeadLetter {
    serde_json::from_slice::<DeadLetter>(data).unwrap_or_else(|_| match serde_json::from_slice::<StoredEvent>(data) {
        Ok(event) => DeadLetter { event, reason: "unknown".to_owned(), dead_at_ms: 0 },
        Err(e) => DeadLetter { event: unreadable(source, data), reason: format!("unreadable: {e}"), dead_at_ms: 0 },
    })
}

/// A dead letter's file name: its id when the id is a safe file name, else its digest.
fn letter_file(id: &str) -> String {
    if !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c)) {
        format!("{id}.json")
    } else {
        use sha2::Digest as _;
        format!("{}.json", hex::encode(sha2::Sha256::digest(id.as_bytes())))
    }
}

#[async_trait]
impl DeadLetters for SpoolDeadLetters {
    async fn bury(&self, source: &str, letter: &DeadLetter) -> Result<(), Unavailable> {
        let dir = self.dead_dir(source);
        let data = serde_json::to_vec(letter).map_err(spool_err)?;
        let name = letter_file(&letter.event.id);
        let beside = format!("{}.{}.json", name.trim_end_matches(".json"), letter.dead_at_ms);
        blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let name = if dir.join(&name).exists() { beside } else { name };
            write_atomically(&dir, &name, &data)
        })
        .await
    }

    async fn list(&self, source: &str) -> Result<Vec<(String, DeadLetter)>, Unavailable> {
        let dir = self.dead_dir(source);
        let source = source.to_owned();
        let mut letters = blocking(move || {
            let mut letters = Vec::new();
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(letters),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let file = entry.file_name().to_string_lossy().into_owned();
                let Some(name) = file.strip_suffix(".json") else { continue };
                letters.push((name.to_owned(), read_letter(&source, &std::fs::read(entry.path())?)));
            }
            Ok(letters)
        })
        .await?;
        letters.sort_by(|a, b| (a.1.dead_at_ms, &a.0).cmp(&(b.1.dead_at_ms, &b.0)));
        Ok(letters)
    }

    async fn take(&self, source: &str, name: &str) -> Result<Option<DeadLetter>, Unavailable> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Ok(None);
        }
        let (dir, name, source) = (self.dead_dir(source), format!("{name}.json"), source.to_owned());
        blocking(move || {
            let path = dir.join(&name);
            let data = match std::fs::read(&path) {
                Ok(data) => data,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            std::fs::remove_file(&path)?;
            sync_dir(&dir)?;
            Ok(Some(read_letter(&source, &data)))
        })
        .await
    }
}

/// One source's files as this process knows them.
#[derive(Default)]
struct SpoolQueue {
    /// Not yet claimed, in arrival order.
    ready: VecDeque<String>,
    claimed: HashSet<String>,
    /// Deferred: (due, name), and what each waits as.
    deferred: BTreeSet<(i64, String)>,
    waiting: HashMap<String, Waiting>,
}

/// `<dir>/<source>/<nanos>-<seq>-<uuid>.json`, each written all or nothing, so a file that
/// exists under its final name is complete. Names sort in arrival order; an index in memory
/// (rebuilt from the directory at start-up) avoids listing the directory for every event. A
/// deferred event is its file rewritten with `not_before_ms`; dead letters go to
/// `<dir>/<source>/dead/` ([`SpoolDeadLetters`]).
pub struct SpoolOutbox {
    dir: PathBuf,
    queues: Mutex<HashMap<String, SpoolQueue>>,
    seq: AtomicU64,
    dead: SpoolDeadLetters,
    /// When each source's directory was last looked at for files written by another
    /// process (an operator's replay).
    scanned: Mutex<HashMap<String, std::time::Instant>>,
}

/// How often an idle source's directory is listed for files another process wrote.
const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// Files younger than this are left to the process writing them.
const RESCAN_SETTLE: Duration = Duration::from_secs(1);

impl SpoolOutbox {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dead: SpoolDeadLetters::new(dir.clone()),
            dir,
            queues: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            scanned: Mutex::new(HashMap::new()),
        }
    }

    fn source_dir(&self, source: &str) -> PathBuf {
        self.dir.join(source)
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, SpoolQueue>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A due deferred file, else the oldest ready one, marked claimed.
    fn next(&self, source: &str) -> Option<String> {
        let mut queues = self.queues();
        let queue = queues.get_mut(source)?;
        let now = now_ms();
        let name = match queue.deferred.first() {
            Some((due, _)) if *due <= now => queue.deferred.pop_first().map(|(_, name)| name),
            _ => queue.ready.pop_front(),
        }?;
        queue.waiting.remove(&name);
        queue.claimed.insert(name.clone());
        Some(name)
    }

    fn forget(&self, source: &str, name: &str) {
        if let Some(queue) = self.queues().get_mut(source) {
            queue.claimed.remove(name);
        }
    }

    /// Queues the files of `source` this process does not know yet (written by
    /// `cargo xtask webhooks dead replay`), at most every [`RESCAN_EVERY`].
    async fn rescan(&self, source: &str) -> Result<(), Unavailable> {
        {
            let mut scanned = self.scanned.lock().unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            if scanned.get(source).is_some_and(|at| now.duration_since(*at) < RESCAN_EVERY) {
                return Ok(());
            }
            scanned.insert(source.to_owned(), now);
        }
        let dir = self.source_dir(source);
        let mut names = blocking(move || {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") {
                    names.push(name);
                }
            }
            Ok(names)
        })
        .await?;
        names.sort();
        let mut queues = self.queues();
        let queue = queues.entry(source.to_owned()).or_default();
        let known: HashSet<&String> =
            queue.ready.iter().chain(queue.claimed.iter()).chain(queue.deferred.iter().map(|(_, n)| n)).collect();
        // A file this process is pushing right now may be renamed before it is queued; names
        // start with their write time, so the newest are left for a later look.
        let settled = platform::clock::Clock::now(&platform::clock::SystemClock).unix_timestamp_nanos()
            - i128::try_from(RESCAN_SETTLE.as_nanos()).unwrap_or(i128::MAX);
        let new: Vec<String> = names
            .into_iter()
            .filter(|n| !known.contains(n))
            .filter(|n| n.get(..20).and_then(|t| t.parse::<i128>().ok()).is_none_or(|written| written < settled))
            .collect();
        if !new.is_empty() {
            tracing::info!(source, count = new.len(), "webhook events written by another process queued");
        }
        queue.ready.extend(new);
        Ok(())
    }
}

#[async_trait]
impl Outbox for SpoolOutbox {
    async fn recover(&self, source: &str) -> Result<u64, Unavailable> {
        let dir = self.source_dir(source);
        let files = blocking(move || {
            std::fs::create_dir_all(dir.join("dead"))?;
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    // Never acknowledged to the sender, who will send it again (or a rewrite
                    // that never happened: the file under its name is still whole).
                    std::fs::remove_file(entry.path())?;
                } else if name.ends_with(".json") && entry.file_type()?.is_file() {
                    // Only a deferred event's time is needed; an unreadable file is found
                    // out (and set aside) when it is claimed.
                    let waiting = serde_json::from_slice::<StoredEvent>(&std::fs::read(entry.path())?)
                        .ok()
                        .and_then(|event| event.not_before_ms.map(|due| event.waiting(due)));
                    files.push((name, waiting));
                }
            }
            files.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(files)
        })
        .await?;
        let count = files.len() as u64;
        let mut queue = SpoolQueue::default();
        for (name, waiting) in files {
            match waiting {
                Some(waiting) => {
                    queue.deferred.insert((waiting.due_ms, name.clone()));
                    queue.waiting.insert(name, waiting);
                }
                None => queue.ready.push_back(name),
            }
        }
        self.queues().insert(source.to_owned(), queue);
        Ok(count)
    }

    async fn push(&self, event: &StoredEvent) -> Result<(), Unavailable> {
        let data = serde_json::to_vec(event).map_err(spool_err)?;
        let nanos = platform::clock::Clock::now(&platform::clock::SystemClock).unix_timestamp_nanos().max(0);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{nanos:020}-{seq:010}-{}.json", uuid::Uuid::new_v4().simple());
        let dir = self.source_dir(&event.source);
        let final_name = name.clone();
        blocking(move || write_atomically(&dir, &final_name, &data)).await?;
        self.queues().entry(event.source.clone()).or_default().ready.push_back(name);
        Ok(())
    }

    async fn claim(&self, source: &str) -> Result<Option<Claimed>, Unavailable> {
        loop {
            let name = match self.next(source) {
                Some(name) => name,
                None => {
                    self.rescan(source).await?;
                    match self.next(source) {
                        Some(name) => name,
                        None => return Ok(None),
                    }
                }
            };
            let path = self.source_dir(source).join(&name);
            let data = match blocking(move || std::fs::read(path)).await {
                Ok(data) => data,
                Err(e) => {
                    if let Some(queue) = self.queues().get_mut(source) {
                        queue.claimed.remove(&name);
                        queue.ready.push_front(name);
                    }
                    return Err(e);
                }
            };
            match serde_json::from_slice::<StoredEvent>(&data) {
                Ok(mut event) => {
                    // Its time was a detail of how it waited here.
                    event.not_before_ms = None;
                    return Ok(Some(Claimed { event, token: name }));
                }
                Err(e) => {
                    tracing::error!(source, file = %name, error = %e, "unreadable webhook spool file moved to dead/");
                    let bad = Claimed { event: unreadable(source, &data), token: name };
                    self.dead_letter(source, &bad, &format!("unreadable: {e}")).await?;
                }
            }
        }
    }

    async fn complete(&self, source: &str, claimed: &Claimed) -> Result<Settled, Unavailable> {
        let dir = self.source_dir(source);
        let name = claimed.token.clone();
        blocking(move || {
            remove_if_present(&dir.join(&name))?;
            sync_dir(&dir)
        })
        .await?;
        self.forget(source, &claimed.token);
        Ok(Settled::Done)
    }

    async fn defer(
        &self,
        source: &str,
        claimed: &Claimed,
        event: &StoredEvent,
        delay: Delay,
    ) -> Result<Settled, Unavailable> {
        let due = due_after(delay.wait);
        let mut stored = event.clone();
        stored.not_before_ms = Some(due);
        let data = serde_json::to_vec(&stored).map_err(spool_err)?;
        let (dir, name) = (self.source_dir(source), claimed.token.clone());
        blocking(move || write_atomically(&dir, &name, &data)).await?;
        let mut queues = self.queues();
        let queue = queues.entry(source.to_owned()).or_default();
        queue.claimed.remove(&claimed.token);
        queue.deferred.insert((due, claimed.token.clone()));
        queue.waiting.insert(claimed.token.clone(), stored.waiting(due));
        Ok(Settled::Done)
    }

    async fn dead_letter(&self, source: &str, claimed: &Claimed, reason: &str) -> Result<Settled, Unavailable> {
        let letter = DeadLetter { event: claimed.event.clone(), reason: reason.to_owned(), dead_at_ms: now_ms() };
        self.dead.bury(source, &letter).await?;
        self.complete(source, claimed).await
    }

    async fn waiting(&self, source: &str) -> Result<Vec<Waiting>, Unavailable> {
        Ok(self.queues().get(source).map(|q| q.waiting.values().cloned().collect()).unwrap_or_default())
    }

    fn dead_letters(&self) -> &dyn DeadLetters {
        &self.dead
    }

    async fn pending(&self, source: &str) -> Result<u64, Unavailable> {
        Ok(self.queues().get(source).map_or(0, |q| (q.ready.len() + q.claimed.len() + q.deferred.len()) as u64))
    }

    /// What was claimed goes back in front, in arrival order.
    fn release(&self) {
        for queue in self.queues().values_mut() {
            let mut claimed: Vec<String> = queue.claimed.drain().collect();
            claimed.sort();
            for name in claimed.into_iter().rev() {
                queue.ready.push_front(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(source: &str, id: &str) -> StoredEvent {
        StoredEvent::new(
            id.to_owned(),
            source.to_owned(),
            1_700_000_000,
            Some("application/json".to_owned()),
            vec![("x-hub-signature-256".to_owned(), "sha256=00".to_owned())],
            &[0, 159, 146, 150, b'{'],
        )
    }

    #[tokio::test]
    async fn spool_keeps_order_survives_a_restart_and_removes_delivered_events() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolOutbox::new(dir.path().to_owned());
        assert_eq!(spool.recover("meta").await.unwrap(), 0);
        for id in ["a", "b", "c"] {
            spool.push(&event("meta", id)).await.unwrap();
        }
        assert_eq!(spool.pending("meta").await.unwrap(), 3);
        let first = spool.claim("meta").await.unwrap().unwrap();
        assert_eq!(first.event, event("meta", "a"));
        assert_eq!(first.event.body().unwrap().as_ref(), &[0, 159, 146, 150, b'{']);
        spool.complete("meta", &first).await.unwrap();

        // A leftover temporary file is a write that was never acknowledged.
        std::fs::write(dir.path().join("meta").join("zzz.json.tmp"), b"{").unwrap();
        let again = SpoolOutbox::new(dir.path().to_owned());
        assert_eq!(again.recover("meta").await.unwrap(), 2);
        assert!(!dir.path().join("meta").join("zzz.json.tmp").exists());
        let second = again.claim("meta").await.unwrap().unwrap();
        assert_eq!(second.event.id, "b");
        again.dead_letter("meta", &second, "refused").await.unwrap();
        assert_eq!(again.pending("meta").await.unwrap(), 1);
        assert_eq!(std::fs::read_dir(dir.path().join("meta").join("dead")).unwrap().count(), 1);
        assert_eq!(again.claim("meta").await.unwrap().unwrap().event.id, "c");
    }

    #[test]
    fn events_stored_before_refusals_existed_still_read_and_a_revival_lifts_one() {
        let before = r#"{"id":"e1","source":"meta","received_at":1,"content_type":null,"headers":[],"body":"e30="}"#;
        let event: StoredEvent = serde_json::from_str(before).unwrap();
        assert_eq!((event.refusal.as_deref(), event.body().unwrap().as_ref()), (None, &b"{}"[..]));
        assert!(!serde_json::to_string(&event).unwrap().contains("refusal"), "written as before when unset");

        let refused = event.refused("schema: /type: value is not one of [\"a\"]".to_owned());
        let read: StoredEvent = serde_json::from_str(&serde_json::to_string(&refused).unwrap()).unwrap();
        assert_eq!(read, refused);
        assert_eq!(read.revived().refusal, None);
    }

    #[tokio::test]
    async fn spool_picks_up_files_another_process_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let running = SpoolOutbox::new(dir.path().to_owned());
        running.recover("meta").await.unwrap();
        assert!(running.claim("meta").await.unwrap().is_none());
        // An operator's replay, from another process.
        let operator = SpoolOutbox::new(dir.path().to_owned());
        operator.push(&event("meta", "replayed")).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let claimed = loop {
            if let Some(claimed) = running.claim("meta").await.unwrap() {
                break claimed;
            }
            assert!(std::time::Instant::now() < deadline, "never picked up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(claimed.event.id, "replayed");
        running.complete("meta", &claimed).await.unwrap();
        // Known now: not queued twice.
        tokio::time::sleep(RESCAN_EVERY + RESCAN_SETTLE).await;
        assert!(running.claim("meta").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn spool_moves_an_unreadable_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("s")).unwrap();
        std::fs::write(dir.path().join("s").join("0-broken.json"), b"not json").unwrap();
        let spool = SpoolOutbox::new(dir.path().to_owned());
        assert_eq!(spool.recover("s").await.unwrap(), 1);
        spool.push(&event("s", "ok")).await.unwrap();
        assert_eq!(spool.claim("s").await.unwrap().unwrap().event.id, "ok");
        let dead = spool.dead_letters().list("s").await.unwrap();
        assert_eq!(dead.len(), 1);
        assert!(dead[0].1.reason.starts_with("unreadable"), "{:?}", dead[0].1);
        assert_eq!(dead[0].1.event.body().unwrap().as_ref(), b"not json", "the bytes are kept");
    }
}
