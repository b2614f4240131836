//! The durable outbox of accepted events, one queue per source: Redis lists in distributed
//! mode (`queue` → `processing` → removed, or `dead`), a spool directory of fsynced files in
//! embedded mode, or RabbitMQ quorum queues when `AMQP_URL` is set (`super::amqp`). An event
//! is acknowledged to its sender only once it is here.

use std::{
    collections::{HashMap, VecDeque},
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
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
        Self { id, source, received_at, content_type, headers, body: BASE64.encode(body) }
    }

    pub fn body(&self) -> Result<Bytes, String> {
        BASE64.decode(&self.body).map(Bytes::from).map_err(|e| format!("stored body is not base64: {e}"))
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

#[async_trait]
pub trait Outbox: Send + Sync {
    /// Prepares the source's queue at start-up and puts back events a previous run had
    /// claimed but not finished; returns how many are pending.
    async fn recover(&self, source: &str) -> Result<u64, Unavailable>;
    /// Stores durably; once this returns `Ok` the event survives a crash.
    async fn push(&self, event: &StoredEvent) -> Result<(), Unavailable>;
    /// The oldest pending event, marked in flight; `None` when the queue is empty.
    async fn claim(&self, source: &str) -> Result<Option<Claimed>, Unavailable>;
    /// Removes a delivered event.
    async fn complete(&self, source: &str, claimed: &Claimed) -> Result<(), Unavailable>;
    /// Moves an event the upstream refused for good aside, kept for an operator.
    async fn dead_letter(&self, source: &str, claimed: &Claimed) -> Result<(), Unavailable>;
    /// Events not yet delivered, in flight included.
    async fn pending(&self, source: &str) -> Result<u64, Unavailable>;
    /// Lets go of what this instance holds in flight, so another instance (or the next
    /// start) can take it; called when the workers stop. A later call works again.
    fn release(&self) {}
}

fn redis_err(e: impl std::fmt::Display) -> Unavailable {
    Unavailable::new("redis", e)
}

/// Lists `<prefix>webhooks:{queue,processing,dead}:<source>`. New events are `LPUSH`ed; the
/// worker `LMOVE`s the oldest from the right end of `queue` to `processing` and `LREM`s it
/// after a 2xx. The worker polls rather than blocking on `BLMOVE`, so it never holds a pooled
/// connection; a local push wakes it at once.
pub struct RedisOutbox {
    pool: Pool,
    prefix: String,
}

impl RedisOutbox {
    pub fn new(pool: Pool, key_prefix: &str) -> Self {
        Self { pool, prefix: format!("{key_prefix}webhooks:") }
    }

    fn key(&self, list: &str, source: &str) -> String {
        format!("{}{list}:{source}", self.prefix)
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, Unavailable> {
        self.pool.get().await.map_err(redis_err)
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
            let item: Option<String> = client::cmd("LMOVE")
                .arg(self.key("queue", source))
                .arg(self.key("processing", source))
                .arg("RIGHT")
                .arg("LEFT")
                .query_async(&mut conn)
                .await
                .map_err(redis_err)?;
            let Some(item) = item else { return Ok(None) };
            drop(conn);
            match serde_json::from_str(&item) {
                Ok(event) => return Ok(Some(Claimed { event, token: item })),
                Err(e) => {
                    // An item this version cannot read is kept aside rather than dropped or
                    // retried forever in front of the others.
                    tracing::error!(source, error = %e, "unreadable webhook outbox item moved to the dead list");
                    let bad = Claimed {
                        event: StoredEvent::new(String::new(), source.to_owned(), 0, None, Vec::new(), b""),
                        token: item,
                    };
                    self.dead_letter(source, &bad).await?;
                }
            }
        }
    }

    async fn complete(&self, source: &str, claimed: &Claimed) -> Result<(), Unavailable> {
        let mut conn = self.conn().await?;
        client::cmd("LREM")
            .arg(self.key("processing", source))
            .arg(1)
            .arg(&claimed.token)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(redis_err)
    }

    async fn dead_letter(&self, source: &str, claimed: &Claimed) -> Result<(), Unavailable> {
        let mut conn = self.conn().await?;
        client::pipe()
            .atomic()
            .cmd("LPUSH")
            .arg(self.key("dead", source))
            .arg(&claimed.token)
            .ignore()
            .cmd("LREM")
            .arg(self.key("processing", source))
            .arg(1)
            .arg(&claimed.token)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    async fn pending(&self, source: &str) -> Result<u64, Unavailable> {
        let mut conn = self.conn().await?;
        let (queued, processing): (u64, u64) = client::pipe()
            .cmd("LLEN")
            .arg(self.key("queue", source))
            .cmd("LLEN")
            .arg(self.key("processing", source))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(queued + processing)
    }
}

fn spool_err(e: impl std::fmt::Display) -> Unavailable {
    Unavailable::new("spool", e)
}

/// `<dir>/<source>/<nanos>-<seq>-<uuid>.json`, written to a `.tmp` file, fsynced, renamed and
/// the directory fsynced, so a file that exists under its final name is complete. Names sort
/// in arrival order; an index in memory (rebuilt from the directory at start-up) avoids
/// listing the directory for every event. Refused events go to `<dir>/<source>/dead/`.
pub struct SpoolOutbox {
    dir: PathBuf,
    queues: Mutex<HashMap<String, VecDeque<String>>>,
    seq: AtomicU64,
}

impl SpoolOutbox {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, queues: Mutex::new(HashMap::new()), seq: AtomicU64::new(0) }
    }

    fn source_dir(&self, source: &str) -> PathBuf {
        self.dir.join(source)
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<String>>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn front(&self, source: &str) -> Option<String> {
        self.queues().get(source).and_then(|q| q.front().cloned())
    }

    fn forget(&self, source: &str, name: &str) {
        if let Some(queue) = self.queues().get_mut(source) {
            queue.retain(|n| n != name);
        }
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Unavailable> {
    tokio::task::spawn_blocking(work).await.map_err(spool_err)?.map_err(spool_err)
}

#[async_trait]
impl Outbox for SpoolOutbox {
    async fn recover(&self, source: &str) -> Result<u64, Unavailable> {
        let dir = self.source_dir(source);
        let names = blocking(move || {
            std::fs::create_dir_all(dir.join("dead"))?;
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    // Never acknowledged to the sender, who will send it again.
                    std::fs::remove_file(entry.path())?;
                } else if name.ends_with(".json") && entry.file_type()?.is_file() {
                    names.push(name);
                }
            }
            names.sort();
            Ok(names)
        })
        .await?;
        let count = names.len() as u64;
        self.queues().insert(source.to_owned(), names.into());
        Ok(count)
    }

    async fn push(&self, event: &StoredEvent) -> Result<(), Unavailable> {
        let data = serde_json::to_vec(event).map_err(spool_err)?;
        let nanos = platform::clock::Clock::now(&platform::clock::SystemClock).unix_timestamp_nanos().max(0);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{nanos:020}-{seq:010}-{}.json", uuid::Uuid::new_v4().simple());
        let dir = self.source_dir(&event.source);
        let final_name = name.clone();
        blocking(move || {
            let tmp = dir.join(format!("{final_name}.tmp"));
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(&data)?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp, dir.join(&final_name))?;
            sync_dir(&dir)
        })
        .await?;
        self.queues().entry(event.source.clone()).or_default().push_back(name);
        Ok(())
    }

    async fn claim(&self, source: &str) -> Result<Option<Claimed>, Unavailable> {
        loop {
            let Some(name) = self.front(source) else { return Ok(None) };
            let path = self.source_dir(source).join(&name);
            let data = blocking(move || std::fs::read(path)).await?;
            match serde_json::from_slice(&data) {
                Ok(event) => return Ok(Some(Claimed { event, token: name })),
                Err(e) => {
                    tracing::error!(source, file = %name, error = %e, "unreadable webhook spool file moved to dead/");
                    let bad = Claimed {
                        event: StoredEvent::new(String::new(), source.to_owned(), 0, None, Vec::new(), b""),
                        token: name,
                    };
                    self.dead_letter(source, &bad).await?;
                }
            }
        }
    }

    async fn complete(&self, source: &str, claimed: &Claimed) -> Result<(), Unavailable> {
        let dir = self.source_dir(source);
        let name = claimed.token.clone();
        blocking(move || {
            match std::fs::remove_file(dir.join(&name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            sync_dir(&dir)
        })
        .await?;
        self.forget(source, &claimed.token);
        Ok(())
    }

    async fn dead_letter(&self, source: &str, claimed: &Claimed) -> Result<(), Unavailable> {
        let dir = self.source_dir(source);
        let name = claimed.token.clone();
        blocking(move || {
            std::fs::rename(dir.join(&name), dir.join("dead").join(&name))?;
            sync_dir(&dir)?;
            sync_dir(&dir.join("dead"))
        })
        .await?;
        self.forget(source, &claimed.token);
        Ok(())
    }

    async fn pending(&self, source: &str) -> Result<u64, Unavailable> {
        Ok(self.queues().get(source).map_or(0, |q| q.len() as u64))
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
        again.dead_letter("meta", &second).await.unwrap();
        assert_eq!(again.pending("meta").await.unwrap(), 1);
        assert_eq!(std::fs::read_dir(dir.path().join("meta").join("dead")).unwrap().count(), 1);
        assert_eq!(again.claim("meta").await.unwrap().unwrap().event.id, "c");
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
        assert!(dir.path().join("s").join("dead").join("0-broken.json").exists());
    }
}
