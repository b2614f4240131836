//! The replay guard: remembers each accepted delivery (by event id, or by signature when the
//! profile has no id) for the acceptance window, in Redis (shared by every gateway instance)
//! or in memory (embedded mode). A key is first marked *pending* for [`PENDING`] while its
//! event is being stored, then *accepted* for the window once it is: a process killed in
//! between leaves only a pending mark, which answers "try again" (503) rather than "replay"
//! (401), and expires, so an event that was never stored is never refused as a replay.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use deadpool_redis::Pool;
use platform::{Unavailable, clock::Clock, redis::client};
use time::OffsetDateTime;

/// How long a key stays pending: longer than storing an event can take (every store call is
/// bounded well below it).
pub const PENDING: Duration = Duration::from_secs(15);

/// What the guard knew of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen: now marked pending.
    New,
    /// Another delivery of it is being stored, or was cut short.
    Pending,
    /// Accepted within the window.
    Replay,
}

#[async_trait]
pub trait ReplayGuard: Send + Sync {
    /// Marks `key` pending unless it is already known.
    async fn mark(&self, key: &str) -> Result<Seen, Unavailable>;
    /// Records the pending `key` as accepted for `window`.
    async fn accept(&self, key: &str, window: Duration) -> Result<(), Unavailable>;
    /// Forgets `key`, so a delivery that could not be stored may be sent again.
    async fn release(&self, key: &str) -> Result<(), Unavailable>;
}

/// Marks a new key pending; says what an existing one is.
const MARK: &str = r"
if redis.call('SET', KEYS[1], 'pending', 'NX', 'EX', ARGV[1]) then return 0 end
if redis.call('GET', KEYS[1]) == 'pending' then return 1 end
return 2";

/// Redis keys `<prefix>webhooks:replay:<source>:<key>` with a TTL.
pub struct RedisReplayGuard {
    pool: Pool,
    prefix: String,
}

impl RedisReplayGuard {
    pub fn new(pool: Pool, key_prefix: &str) -> Self {
        Self { pool, prefix: format!("{key_prefix}webhooks:replay:") }
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, Unavailable> {
        self.pool.get().await.map_err(|e| Unavailable::new("redis", e))
    }
}

#[async_trait]
impl ReplayGuard for RedisReplayGuard {
    async fn mark(&self, key: &str) -> Result<Seen, Unavailable> {
        let mut conn = self.conn().await?;
        let seen: i64 = client::Script::new(MARK)
            .key(format!("{}{key}", self.prefix))
            .arg(PENDING.as_secs())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Unavailable::new("redis", e))?;
        Ok(match seen {
            0 => Seen::New,
            1 => Seen::Pending,
            _ => Seen::Replay,
        })
    }

    async fn accept(&self, key: &str, window: Duration) -> Result<(), Unavailable> {
        let mut conn = self.conn().await?;
        client::cmd("SET")
            .arg(format!("{}{key}", self.prefix))
            .arg("accepted")
            .arg("EX")
            .arg(window.as_secs().max(1))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| Unavailable::new("redis", e))
    }

    async fn release(&self, key: &str) -> Result<(), Unavailable> {
        let mut conn = self.conn().await?;
        client::cmd("DEL")
            .arg(format!("{}{key}", self.prefix))
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| Unavailable::new("redis", e))
    }
}

/// In-process keys with an expiry read from the injected clock.
pub struct MemoryReplayGuard {
    clock: Arc<dyn Clock>,
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    /// Key → (accepted rather than pending, expiry).
    seen: HashMap<String, (bool, OffsetDateTime)>,
    /// The map is swept of expired keys when it has doubled since the last sweep, so memory
    /// follows the live window without a timer task.
    sweep_at: usize,
}

impl MemoryReplayGuard {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, state: Mutex::new(MemoryState { seen: HashMap::new(), sweep_at: 1024 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ReplayGuard for MemoryReplayGuard {
    async fn mark(&self, key: &str) -> Result<Seen, Unavailable> {
        let now = self.clock.now();
        let mut state = self.lock();
        if state.seen.len() >= state.sweep_at {
            state.seen.retain(|_, (_, expires)| *expires > now);
            state.sweep_at = (state.seen.len() * 2).max(1024);
        }
        match state.seen.get(key) {
            Some((true, expires)) if *expires > now => return Ok(Seen::Replay),
            Some((false, expires)) if *expires > now => return Ok(Seen::Pending),
            _ => {}
        }
        let pending = time::Duration::try_from(PENDING).unwrap_or(time::Duration::MAX);
        state.seen.insert(key.to_owned(), (false, now.saturating_add(pending)));
        Ok(Seen::New)
    }

    async fn accept(&self, key: &str, window: Duration) -> Result<(), Unavailable> {
        let now = self.clock.now();
        let window = time::Duration::try_from(window).unwrap_or(time::Duration::MAX);
        self.lock().seen.insert(key.to_owned(), (true, now.saturating_add(window)));
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), Unavailable> {
        self.lock().seen.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use platform::clock::ManualClock;

    use super::*;

    /// What every guard does, on a clock `advance` moves.
    async fn refuses_within_the_window_and_forgets_after(guard: &dyn ReplayGuard, advance: impl AsyncFn(u64)) {
        let window = Duration::from_secs(60);
        assert_eq!(guard.mark("a:id:1").await.unwrap(), Seen::New);
        assert_eq!(guard.mark("a:id:1").await.unwrap(), Seen::Pending, "being stored: not yet a replay");
        guard.accept("a:id:1", window).await.unwrap();
        assert_eq!(guard.mark("a:id:1").await.unwrap(), Seen::Replay);
        assert_eq!(guard.mark("b:id:1").await.unwrap(), Seen::New, "keys are per source");
        guard.release("b:id:1").await.unwrap();
        assert_eq!(guard.mark("b:id:1").await.unwrap(), Seen::New, "a released key may be used again");
        // A pending mark left by a process killed before it stored the event expires, so the
        // sender's retry is accepted rather than refused as a replay.
        advance(PENDING.as_secs() + 1).await;
        assert_eq!(guard.mark("b:id:1").await.unwrap(), Seen::New);
        assert_eq!(guard.mark("a:id:1").await.unwrap(), Seen::Replay, "accepted keys last the window");
    }

    #[tokio::test]
    async fn memory_guard_marks_pending_then_accepted_and_forgets_after() {
        let clock = ManualClock::default();
        let guard = MemoryReplayGuard::new(Arc::new(clock.clone()));
        refuses_within_the_window_and_forgets_after(&guard, async |secs| {
            clock.advance(time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX)));
        })
        .await;
        clock.advance(time::Duration::seconds(60));
        assert_eq!(guard.mark("a:id:1").await.unwrap(), Seen::New, "expired keys are forgotten");
    }

    #[tokio::test]
    async fn redis_guard_marks_pending_then_accepted_and_forgets_after() {
        let Some(testkit::Backend::Postgres { redis_url, .. }) = testkit::Backend::shared() else { return };
        let pool = platform::redis::connect(&redis_url).await.unwrap_or_else(|e| panic!("Redis: {e}"));
        let guard = RedisReplayGuard::new(pool, &format!("pc_test:{}:", uuid::Uuid::new_v4().simple()));
        // Redis keeps its own time; expiry is waited for.
        refuses_within_the_window_and_forgets_after(&guard, async |secs| {
            tokio::time::sleep(Duration::from_secs(secs)).await;
        })
        .await;
    }

    #[tokio::test]
    async fn memory_guard_sweeps_expired_keys() {
        let clock = ManualClock::default();
        let guard = MemoryReplayGuard::new(Arc::new(clock.clone()));
        for i in 0..1024 {
            guard.mark(&format!("k{i}")).await.unwrap();
        }
        clock.advance(time::Duration::seconds(i64::try_from(PENDING.as_secs()).unwrap_or(0) + 1));
        guard.mark("fresh").await.unwrap();
        assert_eq!(guard.lock().seen.len(), 1);
    }
}
