//! Fixed-window counters for limits that must hold under concurrency (failed logins,
//! authentication failures): Redis in distributed mode so every instance shares them,
//! in-process in embedded mode. A limit is a **reservation** taken before the work it guards
//! (CONVENTIONS, "count before you work"): every counter of a request is checked and
//! incremented together in one atomic step, only when all are under their maximum, so a
//! refused attempt consumes nothing and requests in flight can never overshoot the limit.
//! Work that turns out not to count (a successful login) refunds its reservation.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemoryCounters;
pub use redis::RedisCounters;

use crate::Unavailable;

/// One counter a reservation takes: at most `max` hits in a window of `window`, which starts
/// at the counter's first hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub key: String,
    pub max: u64,
    pub window: Duration,
}

/// The outcome of [`Counters::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// One hit was taken on every counter.
    Taken,
    /// A counter is full; nothing was taken. `retry_after` is when that counter's window ends
    /// (at least one second).
    Refused { retry_after: Duration },
}

#[async_trait]
pub trait Counters: Send + Sync + 'static {
    /// Takes one hit on every limit at once, or none when any is at its maximum.
    async fn reserve(&self, limits: &[Limit]) -> Result<Reservation, Unavailable>;
    /// Gives back one hit on each counter (never below zero).
    async fn refund(&self, keys: &[&str]) -> Result<(), Unavailable>;
    /// Forgets a counter (a successful login clears its pair's failures).
    async fn clear(&self, key: &str) -> Result<(), Unavailable>;
}

/// A refusal's wait: the counter's remaining window, at least a second.
fn retry_after(resets_in: Duration) -> Duration {
    resets_in.max(Duration::from_secs(1))
}

#[cfg(test)]
pub(crate) mod conformance {
    //! What every implementation must do, run against each.

    use super::*;

    fn limit(key: &str, max: u64) -> Limit {
        Limit { key: key.to_owned(), max, window: Duration::from_secs(60) }
    }

    pub async fn reservations_are_all_or_nothing(counters: &dyn Counters, tag: &str) {
        let (pair, ip) = (format!("{tag}:pair"), format!("{tag}:ip"));
        let both = [limit(&pair, 2), limit(&ip, 3)];
        assert_eq!(counters.reserve(&both).await.ok(), Some(Reservation::Taken));
        assert_eq!(counters.reserve(&both).await.ok(), Some(Reservation::Taken));
        // The pair is full: refused, and the IP counter is not charged for it.
        let refused = counters.reserve(&both).await.ok();
        assert!(matches!(refused, Some(Reservation::Refused { retry_after }) if retry_after >= Duration::from_secs(1)));
        assert_eq!(counters.reserve(&[limit(&ip, 3)]).await.ok(), Some(Reservation::Taken));
        assert!(matches!(counters.reserve(&[limit(&ip, 3)]).await.ok(), Some(Reservation::Refused { .. })));
        // A refund gives one hit back; clearing forgets the counter.
        counters.refund(&[&ip]).await.ok();
        assert_eq!(counters.reserve(&[limit(&ip, 3)]).await.ok(), Some(Reservation::Taken));
        counters.clear(&pair).await.ok();
        counters.refund(&[&ip, &ip, &ip, &ip, &ip]).await.ok();
        assert_eq!(counters.reserve(&both).await.ok(), Some(Reservation::Taken));
    }

    pub async fn concurrent_reservations_never_overshoot(counters: std::sync::Arc<dyn Counters>, tag: &str) {
        let key = format!("{tag}:storm");
        let attempts = (0..200).map(|_| {
            let counters = counters.clone();
            let key = key.clone();
            tokio::spawn(async move { counters.reserve(&[limit(&key, 10)]).await.ok() })
        });
        let results = futures::future::join_all(attempts).await;
        let taken = results.iter().filter(|r| matches!(r, Ok(Some(Reservation::Taken)))).count();
        assert_eq!(taken, 10);
    }
}
