//! The replay guard: remembers each accepted delivery (by event id, or by signature when the
//! profile has no id) for the acceptance window, in Redis (`SET NX EX`, shared by every
//! gateway instance) or in memory (embedded mode).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use deadpool_redis::Pool;
use platform::{Unavailable, clock::Clock, redis::client};
use time::OffsetDateTime;

#[async_trait]
pub trait ReplayGuard: Send + Sync {
    /// Records `key` for `ttl`; `true` the first time, `false` while it is remembered.
    async fn first_seen(&self, key: &str, ttl: Duration) -> Result<bool, Unavailable>;
    /// Forgets `key`, so a delivery that could not be stored may be sent again.
    async fn release(&self, key: &str) -> Result<(), Unavailable>;
}

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
    async fn first_seen(&self, key: &str, ttl: Duration) -> Result<bool, Unavailable> {
        let mut conn = self.conn().await?;
        let set: Option<String> = client::cmd("SET")
            .arg(format!("{}{key}", self.prefix))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| Unavailable::new("redis", e))?;
        Ok(set.is_some())
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
    seen: HashMap<String, OffsetDateTime>,
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
    async fn first_seen(&self, key: &str, ttl: Duration) -> Result<bool, Unavailable> {
        let now = self.clock.now();
        let mut state = self.lock();
        if state.seen.len() >= state.sweep_at {
            state.seen.retain(|_, expires| *expires > now);
            state.sweep_at = (state.seen.len() * 2).max(1024);
        }
        if state.seen.get(key).is_some_and(|expires| *expires > now) {
            return Ok(false);
        }
        let ttl = time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX);
        state.seen.insert(key.to_owned(), now.saturating_add(ttl));
        Ok(true)
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

    #[tokio::test]
    async fn memory_guard_refuses_within_the_window_and_forgets_after() {
        let clock = ManualClock::default();
        let guard = MemoryReplayGuard::new(Arc::new(clock.clone()));
        let ttl = Duration::from_secs(60);
        assert!(guard.first_seen("a:id:1", ttl).await.unwrap());
        assert!(!guard.first_seen("a:id:1", ttl).await.unwrap());
        assert!(guard.first_seen("b:id:1", ttl).await.unwrap(), "keys are per source");
        clock.advance(time::Duration::seconds(59));
        assert!(!guard.first_seen("a:id:1", ttl).await.unwrap());
        clock.advance(time::Duration::seconds(2));
        assert!(guard.first_seen("a:id:1", ttl).await.unwrap(), "expired keys are forgotten");
        guard.release("a:id:1").await.unwrap();
        assert!(guard.first_seen("a:id:1", ttl).await.unwrap(), "a released key may be used again");
    }

    #[tokio::test]
    async fn memory_guard_sweeps_expired_keys() {
        let clock = ManualClock::default();
        let guard = MemoryReplayGuard::new(Arc::new(clock.clone()));
        for i in 0..1024 {
            guard.first_seen(&format!("k{i}"), Duration::from_secs(1)).await.unwrap();
        }
        clock.advance(time::Duration::seconds(2));
        guard.first_seen("fresh", Duration::from_secs(1)).await.unwrap();
        assert_eq!(guard.lock().seen.len(), 1);
    }
}
