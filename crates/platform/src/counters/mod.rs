//! Fixed-window counters for rate limits (failed logins, later the gateway's limits): Redis
//! in distributed mode so every instance shares them, in-process in embedded mode.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemoryCounters;
pub use redis::RedisCounters;

use crate::Unavailable;

/// A counter's value in its current window and when that window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub hits: u64,
    pub resets_in: Duration,
}

#[async_trait]
pub trait Counters: Send + Sync + 'static {
    /// Adds one; the window starts at the first hit and lasts `window`.
    async fn increment(&self, key: &str, window: Duration) -> Result<Count, Unavailable>;
    /// Reads without counting.
    async fn current(&self, key: &str) -> Result<Count, Unavailable>;
    /// Forgets a counter (a successful login clears its failures).
    async fn clear(&self, key: &str) -> Result<(), Unavailable>;
}
