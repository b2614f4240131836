//! Redis counters: `INCR` plus `PEXPIRE … NX` in one transaction, so every instance shares
//! the same window.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::Pool;

use super::{Count, Counters};
use crate::{Unavailable, redis::client};

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

fn count(hits: Option<u64>, pttl: i64) -> Count {
    Count { hits: hits.unwrap_or(0), resets_in: Duration::from_millis(u64::try_from(pttl).unwrap_or(0)) }
}

#[async_trait]
impl Counters for RedisCounters {
    async fn increment(&self, key: &str, window: Duration) -> Result<Count, Unavailable> {
        let key = format!("{}{key}", self.prefix);
        let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn().await?;
        let (hits, pttl): (u64, i64) = client::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(millis)
            .arg("NX")
            .ignore()
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| Unavailable::new("redis", e))?;
        Ok(count(Some(hits), pttl))
    }

    async fn current(&self, key: &str) -> Result<Count, Unavailable> {
        let key = format!("{}{key}", self.prefix);
        let mut conn = self.conn().await?;
        let (hits, pttl): (Option<u64>, i64) = client::pipe()
            .cmd("GET")
            .arg(&key)
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| Unavailable::new("redis", e))?;
        Ok(count(hits, pttl))
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
