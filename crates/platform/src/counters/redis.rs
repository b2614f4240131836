//! Redis counters shared by every instance: a reservation is one Lua script over all its
//! keys (read every counter, and only when all are under their maximum, increment each and
//! start its window), so concurrent requests on any number of instances cannot overshoot.

use std::{sync::LazyLock, time::Duration};

use async_trait::async_trait;
use deadpool_redis::Pool;

use super::{Counters, Limit, Reservation, retry_after};
use crate::{Unavailable, redis::client};

/// KEYS: the counters; ARGV: for each, its maximum and its window in milliseconds.
/// Returns `{1, 0}` when taken, `{0, pttl}` of the first full counter when refused.
const RESERVE: &str = r"
for i, key in ipairs(KEYS) do
  local hits = tonumber(redis.call('GET', key) or '0')
  if hits >= tonumber(ARGV[2 * i - 1]) then
    return {0, redis.call('PTTL', key)}
  end
end
for i, key in ipairs(KEYS) do
  redis.call('INCR', key)
  if redis.call('PTTL', key) < 0 then
    redis.call('PEXPIRE', key, ARGV[2 * i])
  end
end
return {1, 0}
";

/// KEYS: the counters to give one hit back to, never below zero.
const REFUND: &str = r"
for _, key in ipairs(KEYS) do
  local hits = tonumber(redis.call('GET', key) or '0')
  if hits > 0 then
    redis.call('DECR', key)
  end
end
return 0
";

static RESERVE_SCRIPT: LazyLock<client::Script> = LazyLock::new(|| client::Script::new(RESERVE));
static REFUND_SCRIPT: LazyLock<client::Script> = LazyLock::new(|| client::Script::new(REFUND));

#[derive(Clone)]
pub struct RedisCounters {
    pool: Pool,
    prefix: String,
}

impl RedisCounters {
    /// `prefix` namespaces the keys (`portcullis:rl:` by default).
    pub fn new(pool: Pool, prefix: impl Into<String>) -> Self {
        Self { pool, prefix: prefix.into() }
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, Unavailable> {
        self.pool.get().await.map_err(|e| Unavailable::new("redis", e))
    }
}

#[async_trait]
impl Counters for RedisCounters {
    async fn reserve(&self, limits: &[Limit]) -> Result<Reservation, Unavailable> {
        let mut invocation = RESERVE_SCRIPT.prepare_invoke();
        for limit in limits {
            let millis = u64::try_from(limit.window.as_millis()).unwrap_or(u64::MAX).max(1);
            invocation.key(format!("{}{}", self.prefix, limit.key)).arg(limit.max).arg(millis);
        }
        let mut conn = self.conn().await?;
        let (taken, pttl): (i64, i64) =
            invocation.invoke_async(&mut conn).await.map_err(|e| Unavailable::new("redis", e))?;
        Ok(if taken == 1 {
            Reservation::Taken
        } else {
            let resets_in = Duration::from_millis(u64::try_from(pttl).unwrap_or(0));
            Reservation::Refused { retry_after: retry_after(resets_in) }
        })
    }

    async fn refund(&self, keys: &[&str]) -> Result<(), Unavailable> {
        let mut invocation = REFUND_SCRIPT.prepare_invoke();
        for key in keys {
            invocation.key(format!("{}{key}", self.prefix));
        }
        let mut conn = self.conn().await?;
        invocation.invoke_async::<i64>(&mut conn).await.map(drop).map_err(|e| Unavailable::new("redis", e))
    }

    async fn clear(&self, key: &str) -> Result<(), Unavailable> {
        let key = format!("{}{key}", self.prefix);
        let mut conn = self.conn().await?;
        client::cmd("DEL")
            .arg(&key)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| Unavailable::new("redis", e))
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests read the wall clock
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::counters::conformance;

    /// Runs on the Redis of `REDIS_URL` (CI sets it; there, its absence fails the test).
    fn redis_url() -> Option<String> {
        match std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty()) {
            Some(url) => Some(url),
            None if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") => {
                panic!("CI must set REDIS_URL: the Redis counters may not go untested")
            }
            None => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_suite() {
        let Some(url) = redis_url() else { return };
        let pool = crate::redis::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
        let prefix = format!("pc_test:{}:", std::process::id());
        let tag = format!(
            "r{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let counters = RedisCounters::new(pool, format!("{prefix}{tag}:"));
        conformance::reservations_are_all_or_nothing(&counters, &tag).await;
        conformance::concurrent_reservations_never_overshoot(Arc::new(counters.clone()), &tag).await;
        conformance::failures_are_limited_and_successes_refunded(Arc::new(counters)).await;
    }
}
