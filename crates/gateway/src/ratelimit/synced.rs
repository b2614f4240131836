//! The synced mode (`RATE_LIMIT_MODE=synced`): each instance answers from a local copy of
//! every bucket it is using and reconciles the copies with Redis every `every` (at most
//! 100 ms) in one script call, instead of one Redis round trip per request.
//!
//! - A key this instance has not used since the last reconciliation is checked in Redis as in
//!   the exact mode, and that answer seeds the local copy.
//! - Afterwards a request is answered by GCRA on the local copy; what it admits is counted as
//!   pending.
//! - Each reconciliation charges every copy's pending requests to the shared bucket and adopts
//!   the shared bucket's state (everything every instance charged), plus whatever was admitted
//!   here while the call was under way. Copies that saw no request since the previous one are
//!   dropped, so the next request goes to Redis again.
//!
//! Overshoot bound: an instance's copy is at most one interval (plus a Redis round trip) old,
//! so with `N` instances a bucket admits at most `(N − 1) × (capacity left at the last
//! reconciliation + limit × every ÷ period)` requests beyond its limit, and only when several
//! instances spend the same capacity in the same interval; the excess is charged to the shared
//! bucket at the next reconciliation, which then refuses sooner, so the long-run rate is the
//! limit. With one instance the mode is exact. When Redis fails, pending counts are kept and
//! charged once it answers again; the copies go on answering meanwhile.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use super::{Cell, Decision};
use crate::domain::RateLimit;

/// Charges `pending` requests to each bucket and returns, per key, how far the shared
/// bucket's theoretical arrival time is ahead of the server's clock, in microseconds.
/// ARGV holds `interval, period, pending` for each key in turn.
pub(super) const RECONCILE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[i * 3 - 2])
  local pending = tonumber(ARGV[i * 3])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  if pending > 0 then
    tat = tat + pending * interval
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
  end
  out[i] = math.floor(tat - now)
end
return out
";

/// Keys per reconciliation call.
pub(super) const BATCH: usize = 256;

/// One bucket's local copy.
#[derive(Debug)]
struct Copy {
    limit: RateLimit,
    /// Theoretical arrival time on the limiter's local clock, in microseconds.
    tat_us: f64,
    /// Admitted here and not yet charged to the shared bucket.
    pending: u64,
    /// Asked about since the last reconciliation.
    touched: bool,
}

/// One key's share of a reconciliation: its name, limit and the requests charged.
pub(super) type Charge = (String, RateLimit, u64);

/// The local copies of one instance.
#[derive(Debug)]
pub(super) struct SyncedBuckets {
    pub(super) every: Duration,
    copies: Mutex<HashMap<String, Copy>>,
}

impl SyncedBuckets {
    pub(super) fn new(every: Duration) -> Self {
        Self { every, copies: Mutex::new(HashMap::new()) }
    }

    fn copies(&self) -> std::sync::MutexGuard<'_, HashMap<String, Copy>> {
        self.copies.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Answers from the local copy of `key`, or `None` when there is none for `limit` (the
    /// caller asks Redis and [`seed`](Self::seed)s the copy).
    pub(super) fn check(&self, key: &str, limit: RateLimit, now_us: f64) -> Option<Decision> {
        let mut copies = self.copies();
        let copy = copies.get_mut(key).filter(|copy| copy.limit == limit)?;
        let (decision, tat_us) = Cell::of(limit).apply(limit, copy.tat_us, now_us);
        copy.tat_us = tat_us;
        copy.touched = true;
        if decision.allowed {
            copy.pending += 1;
        }
        Some(decision)
    }

    /// Starts a local copy from an answer the shared bucket gave at `now_us` (already charged
    /// there). A copy another request made meanwhile is kept.
    pub(super) fn seed(&self, key: &str, limit: RateLimit, decision: &Decision, now_us: f64) {
        let tat_us = now_us + decision.reset.as_micros() as f64;
        let mut copies = self.copies();
        let fresh = Copy { limit, tat_us, pending: 0, touched: true };
        match copies.get_mut(key) {
            Some(copy) if copy.limit == limit => {}
            Some(copy) => *copy = fresh,
            None => {
                copies.insert(key.to_owned(), fresh);
            }
        }
    }

    /// What the next reconciliation charges: every copy asked about or with pending requests
    /// since the last one (their pending counts move into the charge); idle copies are dropped.
    pub(super) fn take_charges(&self) -> Vec<Charge> {
        let mut copies = self.copies();
        copies.retain(|_, copy| copy.touched || copy.pending > 0);
        copies
            .iter_mut()
            .map(|(key, copy)| {
                copy.touched = false;
                (key.clone(), copy.limit, std::mem::take(&mut copy.pending))
            })
            .collect()
    }

    /// Adopts the shared buckets' state (`ahead_us` per charge, measured at about `now_us`),
    /// on top of what was admitted here since the charges were taken.
    pub(super) fn adopt(&self, charges: &[Charge], ahead_us: &[i64], now_us: f64) {
        let mut copies = self.copies();
        for ((key, limit, _), ahead) in charges.iter().zip(ahead_us) {
            if let Some(copy) = copies.get_mut(key).filter(|copy| copy.limit == *limit) {
                let since = copy.pending as f64 * Cell::of(*limit).interval_us;
                copy.tat_us = now_us + (*ahead).max(0) as f64 + since;
            }
        }
    }

    /// Gives back charges Redis did not take, to be charged at the next reconciliation.
    pub(super) fn give_back(&self, charges: &[Charge]) {
        let mut copies = self.copies();
        for (key, limit, pending) in charges {
            if let Some(copy) = copies.get_mut(key).filter(|copy| copy.limit == *limit) {
                copy.pending += pending;
                copy.touched = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_second(n: u64) -> RateLimit {
        RateLimit { requests: n, per: Duration::from_secs(1) }
    }

    fn seeded(limit: RateLimit) -> SyncedBuckets {
        let buckets = SyncedBuckets::new(Duration::from_millis(100));
        let (first, _) = Cell::of(limit).apply(limit, 0.0, 0.0);
        buckets.seed("k", limit, &first, 0.0);
        buckets
    }

    #[test]
    fn a_copy_answers_by_gcra_and_counts_what_it_admits() {
        let limit = per_second(4);
        let buckets = SyncedBuckets::new(Duration::from_millis(100));
        assert_eq!(buckets.check("k", limit, 0.0), None, "no copy yet: Redis decides");
        let buckets = seeded(limit);
        let answers: Vec<bool> = (0..4).map(|_| buckets.check("k", limit, 0.0).unwrap().allowed).collect();
        assert_eq!(answers, [true, true, true, false], "the seed's request took the first of four");
        assert_eq!(buckets.take_charges(), [("k".to_owned(), limit, 3)]);
        // Another limit for the key (a tenant's own limit changed) is a new copy.
        assert_eq!(buckets.check("k", per_second(8), 0.0), None);
    }

    #[test]
    fn reconciling_adopts_the_shared_state_and_keeps_what_came_in_meanwhile() {
        let limit = per_second(10);
        let buckets = seeded(limit);
        assert!(buckets.check("k", limit, 0.0).unwrap().allowed);
        let charges = buckets.take_charges();
        assert!(buckets.check("k", limit, 0.0).unwrap().allowed, "admitted while the call is under way");
        // Other instances spent the rest: the shared bucket is 900 ms ahead.
        buckets.adopt(&charges, &[900_000], 0.0);
        let refused = buckets.check("k", limit, 0.0).unwrap();
        assert!(!refused.allowed, "900 ms shared + 100 ms admitted here = a full bucket");
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(buckets.take_charges(), [("k".to_owned(), limit, 1)]);
    }

    #[test]
    fn idle_copies_are_dropped_and_failed_charges_are_kept() {
        let limit = per_second(10);
        let buckets = seeded(limit);
        assert!(buckets.check("k", limit, 0.0).unwrap().allowed);
        let charges = buckets.take_charges();
        buckets.give_back(&charges);
        assert_eq!(buckets.take_charges(), [("k".to_owned(), limit, 1)], "charged again after a failure");
        assert!(buckets.take_charges().is_empty(), "dropped once idle for a whole interval");
        assert_eq!(buckets.check("k", limit, 0.0), None);
    }
}
