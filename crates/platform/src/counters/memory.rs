//! In-process counters for embedded mode.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Count, Counters};
use crate::Unavailable;

/// Above this many keys, expired windows are swept on the next increment.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Default)]
pub struct MemoryCounters {
    windows: Mutex<HashMap<String, (u64, Instant)>>,
}

impl MemoryCounters {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, (u64, Instant)>) -> R) -> R {
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut map)
    }
}

#[async_trait]
impl Counters for MemoryCounters {
    async fn increment(&self, key: &str, window: Duration) -> Result<Count, Unavailable> {
        let now = Instant::now();
        Ok(self.with(|map| {
            if map.len() > SWEEP_ABOVE {
                map.retain(|_, (_, ends)| *ends > now);
            }
            let entry = map.entry(key.to_owned()).or_insert((0, now + window));
            if entry.1 <= now {
                *entry = (0, now + window);
            }
            entry.0 += 1;
            Count { hits: entry.0, resets_in: entry.1 - now }
        }))
    }

    async fn current(&self, key: &str) -> Result<Count, Unavailable> {
        let now = Instant::now();
        Ok(self.with(|map| match map.get(key) {
            Some((hits, ends)) if *ends > now => Count { hits: *hits, resets_in: *ends - now },
            _ => Count { hits: 0, resets_in: Duration::ZERO },
        }))
    }

    async fn clear(&self, key: &str) -> Result<(), Unavailable> {
        self.with(|map| map.remove(key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn window_counts_then_resets() {
        let c = MemoryCounters::default();
        let w = Duration::from_secs(60);
        for expected in 1..=3 {
            assert_eq!(c.increment("k", w).await.map(|x| x.hits).ok(), Some(expected));
        }
        assert_eq!(c.current("k").await.map(|x| x.hits).ok(), Some(3));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(c.current("k").await.map(|x| x.hits).ok(), Some(0));
        assert_eq!(c.increment("k", w).await.map(|x| x.hits).ok(), Some(1));
        c.clear("k").await.ok();
        assert_eq!(c.current("k").await.map(|x| x.hits).ok(), Some(0));
    }
}
