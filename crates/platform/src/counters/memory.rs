//! In-process counters for embedded mode: one lock around a map of windows, checked and
//! incremented together. Expired windows leave through a deadline heap, a few at a time as
//! time passes, so no check ever sweeps the whole map; the map is bounded, and a full map
//! refuses to start new counters (503) rather than forget running ones.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::Mutex,
};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Counters, Limit, Reservation, retry_after};
use crate::Unavailable;

/// The most counters kept at once (about 100 MB at the worst).
pub const MAX_COUNTERS: usize = 1_000_000;

#[derive(Debug, Default)]
struct Windows {
    /// Hits and the end of the window, per key.
    live: HashMap<String, (u64, Instant)>,
    /// When each window ends; an entry whose key has since restarted its window is skipped.
    deadlines: BinaryHeap<Reverse<(Instant, String)>>,
}

impl Windows {
    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((ends, _))) = self.deadlines.peek() {
            if *ends > now {
                break;
            }
            let Some(Reverse((ends, key))) = self.deadlines.pop() else { break };
            if self.live.get(&key).is_some_and(|(_, live_ends)| *live_ends == ends) {
                self.live.remove(&key);
            }
        }
    }
}

#[derive(Debug)]
pub struct MemoryCounters {
    windows: Mutex<Windows>,
    capacity: usize,
}

impl Default for MemoryCounters {
    fn default() -> Self {
        Self::with_capacity(MAX_COUNTERS)
    }
}

impl MemoryCounters {
    /// Counters that keep at most `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { windows: Mutex::default(), capacity }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Windows) -> R) -> R {
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut windows)
    }
}

#[async_trait]
impl Counters for MemoryCounters {
    async fn reserve(&self, limits: &[Limit]) -> Result<Reservation, Unavailable> {
        let now = Instant::now();
        self.with(|windows| {
            windows.expire(now);
            for limit in limits {
                if let Some((hits, ends)) = windows.live.get(&limit.key)
                    && *hits >= limit.max
                {
                    return Ok(Reservation::Refused { retry_after: retry_after(*ends - now) });
                }
            }
            let new = limits.iter().filter(|l| !windows.live.contains_key(&l.key)).count();
            if windows.live.len() + new > self.capacity {
                return Err(Unavailable::new("counters", "too many live counters"));
            }
            for limit in limits {
                let entry = windows.live.entry(limit.key.clone()).or_insert_with(|| (0, now + limit.window));
                if entry.0 == 0 {
                    windows.deadlines.push(Reverse((entry.1, limit.key.clone())));
                }
                entry.0 += 1;
            }
            Ok(Reservation::Taken)
        })
    }

    async fn refund(&self, keys: &[&str]) -> Result<(), Unavailable> {
        self.with(|windows| {
            for key in keys {
                if let Some((hits, _)) = windows.live.get_mut(*key) {
                    *hits = hits.saturating_sub(1);
                }
            }
        });
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<(), Unavailable> {
        // Its deadline entry stays in the heap and is skipped when it comes due.
        self.with(|windows| windows.live.remove(key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::counters::conformance;

    #[tokio::test]
    async fn conformance_suite() {
        conformance::reservations_are_all_or_nothing(&MemoryCounters::default(), "m").await;
        conformance::concurrent_reservations_never_overshoot(Arc::new(MemoryCounters::default()), "m").await;
        conformance::failures_are_limited_and_successes_refunded(Arc::new(MemoryCounters::default())).await;
    }

    #[tokio::test(start_paused = true)]
    async fn windows_expire_without_a_sweep_and_the_map_is_bounded() {
        let counters = MemoryCounters::with_capacity(2);
        let limit = |key: &str| Limit { key: key.to_owned(), max: 1, window: Duration::from_secs(60) };
        assert_eq!(counters.reserve(&[limit("a")]).await.ok(), Some(Reservation::Taken));
        assert_eq!(counters.reserve(&[limit("b")]).await.ok(), Some(Reservation::Taken));
        assert!(counters.reserve(&[limit("c")]).await.is_err(), "a full map refuses new counters");
        let refused = counters.reserve(&[limit("a")]).await.ok();
        assert_eq!(refused, Some(Reservation::Refused { retry_after: Duration::from_secs(60) }));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(counters.reserve(&[limit("c")]).await.ok(), Some(Reservation::Taken));
        assert_eq!(counters.reserve(&[limit("a")]).await.ok(), Some(Reservation::Taken));
        assert_eq!(counters.with(|w| w.live.len()), 2);
    }
}
