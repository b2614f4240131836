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

use crate::{Unavailable, env::EnvExt as _};

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

    pub async fn failures_are_limited_and_successes_refunded(counters: std::sync::Arc<dyn Counters>) {
        let guard =
            FailureGuard::new(Some(counters), crate::rate::RateLimit { requests: 2, per: Duration::from_secs(60) });
        let ip: std::net::IpAddr = "2001:db8:7:7::1".parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        for _ in 0..5 {
            let admitted = guard.admit(ip).await;
            assert!(admitted.is_ok(), "a refunded attempt counted");
            if let Ok(admitted) = admitted {
                guard.refund(admitted).await;
            }
        }
        assert!(guard.admit(ip).await.is_ok() && guard.admit(ip).await.is_ok());
        // Same /64: the third failure is refused.
        let neighbour: std::net::IpAddr =
            "2001:db8:7:7:ffff::2".parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        assert!(guard.admit(neighbour).await.is_err());
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

/// `AUTH_FAILURE_LIMIT` (default `60/minute`): failed authentications one client IP (an IPv6
/// address by its /64) may cause per window (SPEC §6). Every presented credential takes a
/// reservation before it is validated and gives it back when it turns out valid, so a flood
/// of bogus credentials is refused (429) before it costs a lookup, while valid traffic never
/// runs into the limit. Shared through Redis when there is one; if Redis fails, each instance
/// counts locally until it answers again (never unlimited).
///
/// A caller may skip the reservation for a credential it already knows to be valid (the
/// gateway's cached allowed answers): such a credential is no guess, and costs no lookup.
/// Concurrent requests asking the same question (the same credential, for the same IP and
/// origin where those matter) take turns ([`FailureGuard::turn`]): one reserves and asks, the
/// others wait for its answer, so a burst carrying one valid credential is one attempt.
pub struct FailureGuard {
    shared: Option<std::sync::Arc<dyn Counters>>,
    local: MemoryCounters,
    limit: crate::rate::RateLimit,
    /// Questions being asked now, each with the receiver its askers' followers wait on.
    in_flight: std::sync::Mutex<std::collections::HashMap<[u8; 32], tokio::sync::watch::Receiver<()>>>,
}

/// Whose turn it is to ask a question ([`FailureGuard::turn`]).
pub enum Turn<'a> {
    /// Nobody else is asking: reserve and ask. Whoever waits on this question is woken when
    /// it is dropped (answered, failed or abandoned alike).
    Lead(Leading<'a>),
    /// The question is being asked already: [`Turn::wait`] for it, then look for its answer
    /// (a cache); without one, ask as everyone does (reserving).
    Follow(tokio::sync::watch::Receiver<()>),
}

impl Turn<'_> {
    /// For a follower: until the leader is done; for a leader: nothing.
    pub async fn wait(&mut self) {
        if let Self::Follow(done) = self {
            // Only ever closes (the leader's sender dropped): an error is the signal.
            while done.changed().await.is_ok() {}
        }
    }
}

/// The asker of one question, until dropped.
pub struct Leading<'a> {
    guard: &'a FailureGuard,
    question: [u8; 32],
    _done: tokio::sync::watch::Sender<()>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        // Removed before the sender goes (after this body), so a newcomer never follows a
        // finished question.
        self.guard.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.question);
    }
}

/// A reservation taken by [`FailureGuard::admit`].
#[derive(Debug)]
pub struct Admitted {
    key: String,
    local: bool,
}

impl FailureGuard {
    pub const DEFAULT: crate::rate::RateLimit = crate::rate::RateLimit { requests: 60, per: Duration::from_secs(60) };

    pub fn new(shared: Option<std::sync::Arc<dyn Counters>>, limit: crate::rate::RateLimit) -> Self {
        Self { shared, local: MemoryCounters::default(), limit, in_flight: std::sync::Mutex::default() }
    }

    /// Leads `question` (a hash of everything its answer depends on) unless another request
    /// asks it now, in which case this one follows.
    pub fn turn(&self, question: [u8; 32]) -> Turn<'_> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(done) = in_flight.get(&question) {
            return Turn::Follow(done.clone());
        }
        let (sender, receiver) = tokio::sync::watch::channel(());
        in_flight.insert(question, receiver);
        Turn::Lead(Leading { guard: self, question, _done: sender })
    }

    /// Reads `AUTH_FAILURE_LIMIT`.
    pub fn limit_from_env(env: &dyn crate::env::Env) -> Result<crate::rate::RateLimit, crate::env::ConfigError> {
        match env.string("AUTH_FAILURE_LIMIT") {
            None => Ok(Self::DEFAULT),
            Some(raw) => {
                crate::rate::RateLimit::parse(&raw).map_err(|e| crate::env::ConfigError::new("AUTH_FAILURE_LIMIT", e))
            }
        }
    }

    fn limit_for(&self, key: &str) -> Limit {
        Limit { key: key.to_owned(), max: self.limit.requests, window: self.limit.per }
    }

    /// Takes one attempt for `ip`, or says how long it must wait.
    pub async fn admit(&self, ip: std::net::IpAddr) -> Result<Admitted, Duration> {
        let key = format!("authfail:{}", crate::net::limit_key(ip));
        let limits = [self.limit_for(&key)];
        if let Some(shared) = &self.shared {
            match shared.reserve(&limits).await {
                Ok(Reservation::Taken) => return Ok(Admitted { key, local: false }),
                Ok(Reservation::Refused { retry_after }) => return Err(retry_after),
                Err(err) => tracing::warn!(error = %err, "authentication-failure limit counted locally"),
            }
        }
        match self.local.reserve(&limits).await {
            Ok(Reservation::Taken) => Ok(Admitted { key, local: true }),
            Ok(Reservation::Refused { retry_after }) => Err(retry_after),
            // The local map is full: refuse rather than count nothing.
            Err(_) => Err(Duration::from_secs(1)),
        }
    }

    /// The credential was valid (or was never judged): its attempt is given back.
    pub async fn refund(&self, admitted: Admitted) {
        let keys = [admitted.key.as_str()];
        let refunded = match (&self.shared, admitted.local) {
            (Some(shared), false) => shared.refund(&keys).await,
            _ => self.local.refund(&keys).await,
        };
        if let Err(err) = refunded {
            tracing::debug!(error = %err, "authentication attempt not refunded");
        }
    }
}

#[cfg(test)]
mod turn_tests {
    use super::*;

    #[tokio::test]
    async fn one_request_leads_a_question_and_the_others_follow_until_it_is_done() {
        let guard = FailureGuard::new(None, FailureGuard::DEFAULT);
        let lead = guard.turn([1; 32]);
        assert!(matches!(lead, Turn::Lead(_)));
        assert!(matches!(guard.turn([2; 32]), Turn::Lead(_)), "another question has its own turn");
        let mut follower = guard.turn([1; 32]);
        assert!(matches!(follower, Turn::Follow(_)));
        let waiting = tokio::time::timeout(Duration::from_millis(50), follower.wait()).await;
        assert!(waiting.is_err(), "a follower waits while the question is asked");
        drop(lead);
        tokio::time::timeout(Duration::from_secs(1), follower.wait()).await.expect("woken when the leader is done");
        assert!(matches!(guard.turn([1; 32]), Turn::Lead(_)), "a finished question is asked again");
    }
}
