//! Rate limits as GCRA (the generic cell rate algorithm): each key holds one timestamp, the
//! theoretical arrival time, so a limit of `n` per period allows bursts of `n` and then one
//! request every `period / n`. In Redis the check is one Lua script using the server's clock,
//! so every gateway instance shares the same buckets; when Redis cannot be reached each
//! instance falls back to local buckets, says so in its logs and metrics, and tries Redis
//! again a second later. Authentication never depends on this. Which buckets a request counts
//! against is `buckets.rs`.

mod buckets;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use deadpool_redis::Pool;
use platform::redis::client::Script;

use crate::domain::RateLimit;

pub use self::buckets::{ip_limit, route_limit, set_headers};

/// How long a Redis check may take before the local buckets answer instead.
const REDIS_TIMEOUT: Duration = Duration::from_millis(200);
/// After a Redis failure, how long the local buckets answer before Redis is tried again.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Local buckets kept before idle ones are swept.
const LOCAL_SWEEP_AT: usize = 10_000;

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// When refused: how long until one request would pass.
    pub retry_after: Duration,
}

/// GCRA parameters in microseconds.
#[derive(Debug, Clone, Copy)]
struct Cell {
    interval_us: f64,
    period_us: f64,
}

impl Cell {
    fn of(limit: RateLimit) -> Self {
        let period_us = limit.per.as_micros() as f64;
        Self { interval_us: period_us / limit.requests.max(1) as f64, period_us }
    }

    /// Applies one request at `now_us` to a bucket whose theoretical arrival time is `tat_us`;
    /// returns the decision and the new arrival time (unchanged when refused).
    fn apply(self, limit: RateLimit, tat_us: f64, now_us: f64) -> (Decision, f64) {
        let tat = tat_us.max(now_us);
        let new_tat = tat + self.interval_us;
        let diff = new_tat - now_us;
        if diff > self.period_us {
            let decision = Decision {
                allowed: false,
                limit: limit.requests,
                remaining: 0,
                reset: micros(tat - now_us),
                retry_after: micros(diff - self.period_us),
            };
            return (decision, tat);
        }
        let remaining = ((self.period_us - diff) / self.interval_us).floor().max(0.0) as u64;
        let decision = Decision {
            allowed: true,
            limit: limit.requests,
            remaining,
            reset: micros(diff),
            retry_after: Duration::ZERO,
        };
        (decision, new_tat)
    }
}

fn micros(us: f64) -> Duration {
    Duration::from_micros(us.max(0.0).ceil() as u64)
}

/// In-process buckets: the embedded mode's only limiter and the distributed mode's fallback.
#[derive(Debug)]
pub struct LocalLimiter {
    epoch: Instant,
    buckets: Mutex<HashMap<String, f64>>,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self { epoch: Instant::now(), buckets: Mutex::new(HashMap::new()) }
    }
}

impl LocalLimiter {
    pub fn check(&self, key: &str, limit: RateLimit) -> Decision {
        let now_us = self.epoch.elapsed().as_micros() as f64;
        let cell = Cell::of(limit);
        let mut buckets = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= LOCAL_SWEEP_AT {
            buckets.retain(|_, tat| *tat > now_us);
        }
        let tat = buckets.get(key).copied().unwrap_or(now_us);
        let (decision, new_tat) = cell.apply(limit, tat, now_us);
        buckets.insert(key.to_owned(), new_tat);
        decision
    }
}

/// GCRA in Redis on the server's clock (`TIME`), so instances agree. Returns
/// `{allowed, remaining, reset_us, retry_after_us}`.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local diff = new_tat - now
if diff > period then
  return {0, 0, math.ceil(tat - now), math.ceil(diff - period)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil(diff / 1000)))
return {1, math.floor((period - diff) / interval), math.ceil(diff), 0}
";

/// Shared limits in Redis with a local fallback.
pub struct RateLimiter {
    redis: Option<(Pool, String)>,
    script: Script,
    local: LocalLimiter,
    /// Set while Redis is failing; the instant (ms since `local.epoch`) to retry it.
    degraded_until_ms: AtomicU64,
    degraded: AtomicBool,
    fallbacks: AtomicU64,
}

impl RateLimiter {
    /// `redis` is the pool and the key prefix; `None` keeps every bucket in process.
    pub fn new(redis: Option<(Pool, String)>) -> Arc<Self> {
        Arc::new(Self {
            redis,
            script: Script::new(GCRA_SCRIPT),
            local: LocalLimiter::default(),
            degraded_until_ms: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            fallbacks: AtomicU64::new(0),
        })
    }

    /// Whether the limiter is answering from local buckets because Redis failed.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Checks answered locally because Redis failed.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Counts one request against `key`.
    pub async fn check(&self, key: &str, limit: RateLimit) -> Decision {
        let Some((pool, prefix)) = &self.redis else {
            return self.local.check(key, limit);
        };
        let now_ms = self.local.epoch.elapsed().as_millis() as u64;
        if now_ms < self.degraded_until_ms.load(Ordering::Relaxed) {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            return self.local.check(key, limit);
        }
        match tokio::time::timeout(REDIS_TIMEOUT, self.check_redis(pool, &format!("{prefix}gw:rl:{key}"), limit)).await
        {
            Ok(Ok(decision)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limiting: Redis is back, limits are shared again");
                }
                decision
            }
            failed => {
                let reason = match failed {
                    Ok(Err(err)) => err,
                    _ => "timed out".to_owned(),
                };
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %reason, "rate limiting: Redis unreachable, falling back to local limits");
                }
                self.degraded_until_ms.store(now_ms + REDIS_RETRY_AFTER.as_millis() as u64, Ordering::Relaxed);
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.local.check(key, limit)
            }
        }
    }

    async fn check_redis(&self, pool: &Pool, key: &str, limit: RateLimit) -> Result<Decision, String> {
        let cell = Cell::of(limit);
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        let (allowed, remaining, reset_us, retry_us): (i64, i64, i64, i64) = self
            .script
            .key(key)
            .arg(cell.interval_us)
            .arg(cell.period_us)
            .invoke_async(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        let us = |v: i64| Duration::from_micros(v.max(0) as u64);
        Ok(Decision {
            allowed: allowed == 1,
            limit: limit.requests,
            remaining: remaining.max(0) as u64,
            reset: us(reset_us),
            retry_after: us(retry_us),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_second(n: u64) -> RateLimit {
        RateLimit { requests: n, per: Duration::from_secs(1) }
    }

    #[test]
    fn allows_a_burst_of_the_limit_then_refuses_with_the_wait() {
        let limit = per_second(4);
        let cell = Cell::of(limit);
        let mut tat = 0.0;
        for expected_remaining in [3, 2, 1, 0] {
            let (decision, next) = cell.apply(limit, tat, 0.0);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            tat = next;
        }
        let (refused, unchanged) = cell.apply(limit, tat, 0.0);
        assert!(!refused.allowed);
        assert_eq!(unchanged, tat);
        assert_eq!(refused.retry_after, Duration::from_millis(250));
        assert_eq!(refused.reset, Duration::from_secs(1));
    }

    #[test]
    fn capacity_returns_at_the_emission_rate() {
        let limit = per_second(4);
        let cell = Cell::of(limit);
        let mut tat = 0.0;
        for _ in 0..4 {
            tat = cell.apply(limit, tat, 0.0).1;
        }
        assert!(!cell.apply(limit, tat, 249_000.0).0.allowed);
        assert!(cell.apply(limit, tat, 250_000.0).0.allowed);
        // Long idle: the bucket is full again, never more.
        let (decision, _) = cell.apply(limit, tat, 10_000_000.0);
        assert_eq!(decision.remaining, 3);
    }

    #[test]
    fn local_buckets_are_per_key() {
        let local = LocalLimiter::default();
        let limit = per_second(1);
        assert!(local.check("a", limit).allowed);
        assert!(!local.check("a", limit).allowed);
        assert!(local.check("b", limit).allowed);
    }

    #[tokio::test]
    async fn without_redis_the_limiter_is_local_and_not_degraded() {
        let limiter = RateLimiter::new(None);
        assert!(limiter.check("k", per_second(1)).await.allowed);
        assert!(!limiter.check("k", per_second(1)).await.allowed);
        assert!(!limiter.degraded());
    }

    #[tokio::test]
    async fn an_unreachable_redis_falls_back_to_local_limits() {
        // A port nothing listens on: every check must still answer, locally.
        let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:1")
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("pool creation is lazy");
        let limiter = RateLimiter::new(Some((pool, "t:".to_owned())));
        assert!(limiter.check("k", per_second(1)).await.allowed);
        assert!(limiter.degraded());
        assert!(!limiter.check("k", per_second(1)).await.allowed);
        assert_eq!(limiter.fallbacks(), 2);
    }
}
