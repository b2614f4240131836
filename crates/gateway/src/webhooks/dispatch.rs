//! The dispatcher of one source (SPEC §6): takes events from the outbox and delivers up to
//! `concurrency` at once, one at a time per ordering key in sequence order, never waiting on a
//! gap: an event waits only behind an earlier event of its key that this dispatcher knows and
//! that is not finished (in flight, deferred for a retry, or parked). A failed attempt is
//! deferred for the next wait of the source's `retry` schedule (±20 % jitter) and leaves the
//! queue meanwhile; after the last, the event goes to the dead letters. An event stored with
//! a refusal (its payload failed the source's schema under `on_schema_failure =
//! "dead_letter"`) goes there as soon as it is claimed, undelivered.
//!
//! One dispatcher per source is active across gateway instances: with Redis, the one holding
//! the source's lease ([`Lease`]); otherwise this process's. On becoming active it puts back
//! what an earlier holder left claimed and learns from the deferred events which keys are busy.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use deadpool_redis::Pool;
use platform::{Unavailable, redis::client};
use tokio::{
    sync::{Notify, watch},
    task::JoinSet,
    time::Instant,
};

use super::{
    deliver::{Outcome, RetryPolicy, Target, deliver_once},
    metrics::{Ages, Attempt as Counted, WebhookMetrics},
    outbox::{Claimed, Delay, Outbox, Settled, StoredEvent, now_ms},
    render::Render,
};
use crate::config::routes::Delivery;

/// Jitter on each retry wait, in percent either way.
const JITTER_PERCENT: u64 = 20;
/// An event deferred behind an earlier one of its key comes back this long after it.
const PARK_AFTER: Duration = Duration::from_secs(1);
/// Events held in memory behind earlier ones of their keys before claiming pauses.
const MAX_PARKED: usize = 10_000;
/// A deferred event that has not come back this long after it was due is taken to be gone
/// (an operator purged a delay queue), so its key is not blocked for ever.
const LOST_AFTER: Duration = Duration::from_secs(15 * 60);
/// The lease: how long it lasts, and how often its holder renews it.
const LEASE_TTL: Duration = Duration::from_secs(10);
const LEASE_RENEW: Duration = Duration::from_secs(2);

/// A wait of the schedule with jitter: `tier` ± [`JITTER_PERCENT`].
pub fn jittered(tier: Duration) -> Delay {
    let span = tier.as_millis().saturating_mul(u128::from(JITTER_PERCENT)) / 100;
    let random = uuid::Uuid::new_v4().as_u128() % (span.saturating_mul(2).saturating_add(1));
    let millis = tier.as_millis().saturating_sub(span).saturating_add(random);
    Delay { wait: Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX)), tier }
}

/// The deferral of an event behind one of its key that is due back in `wait`: until just
/// after it, in a delay queue of the next power of two seconds (so there are few of them).
fn park_delay(wait: Duration) -> Delay {
    let wait = wait.saturating_add(PARK_AFTER);
    let tier = Duration::from_secs(wait.as_secs().saturating_add(1).next_power_of_two());
    Delay { wait, tier }
}

/// One source's lease in Redis: `<prefix>webhooks:lease:<source>` holds the active
/// instance's id for [`LEASE_TTL`], renewed every [`LEASE_RENEW`] by its holder.
pub struct Lease {
    id: Arc<LeaseId>,
    /// Active until then, as far as this instance can tell.
    until: Option<Instant>,
    checked: Option<Instant>,
}

/// Which lease, and this instance's name in it.
pub struct LeaseId {
    pool: Pool,
    key: String,
    holder: String,
}

impl LeaseId {
    /// Lets the lease go if this instance holds it, so another takes over at once rather
    /// than when it expires.
    pub async fn release(&self) {
        if let Ok(mut conn) = self.pool.get().await {
            let _ =
                client::Script::new(DROP_LEASE).key(&self.key).arg(&self.holder).invoke_async::<i64>(&mut conn).await;
        }
    }
}

/// Takes the lease when it is free, extends it when it is ours.
const TAKE_LEASE: &str = r"
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

const DROP_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

impl Lease {
    pub fn new(pool: Pool, key_prefix: &str, source: &str) -> Self {
        let id = LeaseId {
            pool,
            key: format!("{key_prefix}webhooks:lease:{source}"),
            holder: uuid::Uuid::new_v4().to_string(),
        };
        Self { id: Arc::new(id), until: None, checked: None }
    }

    /// What [`Webhooks::stop`](super::Webhooks::stop) releases.
    pub fn id(&self) -> Arc<LeaseId> {
        self.id.clone()
    }

    async fn try_take(&self) -> Result<bool, Unavailable> {
        let mut conn = self.id.pool.get().await.map_err(|e| Unavailable::new("redis", e))?;
        client::Script::new(TAKE_LEASE)
            .key(&self.id.key)
            .arg(&self.id.holder)
            .arg(u64::try_from(LEASE_TTL.as_millis()).unwrap_or(u64::MAX))
            .invoke_async::<i64>(&mut conn)
            .await
            .map(|taken| taken == 1)
            .map_err(|e| Unavailable::new("redis", e))
    }

    /// Whether this instance is the active one now, renewing when it is time.
    async fn active(&mut self) -> bool {
        let now = Instant::now();
        if self.checked.is_none_or(|at| now.duration_since(at) >= LEASE_RENEW) {
            self.checked = Some(now);
            match self.try_take().await {
                Ok(true) => self.until = Some(now + LEASE_TTL - LEASE_RENEW),
                Ok(false) => self.until = None,
                // Unknown: active only while the last renewal lasts.
                Err(e) => tracing::warn!(key = %self.id.key, error = %e, "cannot renew the webhook dispatch lease"),
            }
        }
        self.until.is_some_and(|until| now < until)
    }
}

/// Where an event of a busy key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    InFlight,
    /// Out of the queue until this unix millisecond (a retry, or parked on RabbitMQ).
    Waiting(i64),
    /// Claimed and held here until the events before it are done.
    Parked,
}

/// One source's dispatcher; returns when `stop` turns true (or its sender is dropped).
pub struct Dispatcher {
    pub source: String,
    pub target: Arc<Target>,
    pub outbox: Arc<dyn Outbox>,
    pub render: Arc<Render>,
    pub notify: Arc<Notify>,
    pub stop: watch::Receiver<bool>,
    pub policy: RetryPolicy,
    pub delivery: Delivery,
    pub lease: Option<Lease>,
    pub metrics: Arc<WebhookMetrics>,
}

/// What the dispatcher knows of its keys.
#[derive(Default)]
struct Lanes {
    /// Per key, the unfinished events it knows, by sequence.
    busy: HashMap<String, BTreeMap<u64, Stage>>,
    /// Claimed events held behind earlier ones of their key (when the outbox allows it).
    parked: HashMap<String, BTreeMap<u64, Claimed>>,
    parked_count: usize,
    /// Acceptance times of the events held here (in flight or parked).
    ages: Ages,
}

impl Lanes {
    /// Whether `event` may go now: no earlier event of its key is unfinished, and no copy of
    /// it is already in flight.
    fn may_go(&self, key: &str, sequence: u64) -> bool {
        self.busy.get(key).is_none_or(|events| {
            events.range(..sequence).next().is_none() && events.get(&sequence) != Some(&Stage::InFlight)
        })
    }

    fn set(&mut self, key: &str, sequence: u64, stage: Stage) {
        self.busy.entry(key.to_owned()).or_default().insert(sequence, stage);
    }

    fn finish(&mut self, key: &str, sequence: u64) {
        if let Some(events) = self.busy.get_mut(key) {
            events.remove(&sequence);
            if events.is_empty() {
                self.busy.remove(key);
            }
        }
    }

    /// How long until the events before `sequence` of `key` may be finished: zero when one
    /// is in flight or held, else until the latest of the waiting ones is due.
    fn blocked_for(&self, key: &str, sequence: u64, now_ms: i64) -> Duration {
        let Some(events) = self.busy.get(key) else { return Duration::ZERO };
        let mut due = now_ms;
        for stage in events.range(..sequence).map(|(_, stage)| stage) {
            match stage {
                Stage::Waiting(at) => due = due.max(*at),
                Stage::InFlight | Stage::Parked => return Duration::ZERO,
            }
        }
        Duration::from_millis(u64::try_from(due - now_ms).unwrap_or(0))
    }

    /// Takes the held events of `key` out (to be deferred).
    fn take_parked(&mut self, key: &str) -> Vec<Claimed> {
        let taken: Vec<Claimed> = self.parked.remove(key).map(|p| p.into_values().collect()).unwrap_or_default();
        self.parked_count -= taken.len();
        for claimed in &taken {
            self.ages.remove(claimed.event.received_at);
        }
        taken
    }

    /// Holds `claimed` behind the earlier events of its key. A copy of it in flight keeps
    /// its stage; a copy already held is replaced and returned.
    fn hold(&mut self, claimed: Claimed) -> Option<Claimed> {
        let key = claimed.event.key.clone()?;
        let sequence = claimed.event.sequence;
        let stage = self.busy.entry(key.clone()).or_default().entry(sequence).or_insert(Stage::Parked);
        if *stage != Stage::InFlight {
            *stage = Stage::Parked;
        }
        let received_at = claimed.event.received_at;
        let replaced = self.parked.entry(key).or_default().insert(sequence, claimed);
        if replaced.is_none() {
            self.parked_count += 1;
            self.ages.add(received_at);
        }
        replaced
    }

    /// Takes the held copy of `key`'s event `sequence` out, if there is one.
    fn take_copy(&mut self, key: &str, sequence: u64) -> Option<Claimed> {
        let parked = self.parked.get_mut(key)?;
        let claimed = parked.remove(&sequence)?;
        if parked.is_empty() {
            self.parked.remove(key);
        }
        self.parked_count -= 1;
        self.ages.remove(claimed.event.received_at);
        Some(claimed)
    }

    /// `key`'s event `sequence` is back in the queue (its claim lapsed): it is still before
    /// the later events of its key, and due at once.
    fn returned(&mut self, key: &str, sequence: u64, now_ms: i64) {
        self.set(key, sequence, Stage::Waiting(now_ms));
    }

    /// The first parked event of `key`, if it may go now.
    fn unpark(&mut self, key: &str) -> Option<Claimed> {
        let sequence = *self.parked.get(key)?.keys().next()?;
        if !self.may_go(key, sequence) {
            return None;
        }
        let parked = self.parked.get_mut(key)?;
        let claimed = parked.remove(&sequence)?;
        if parked.is_empty() {
            self.parked.remove(key);
        }
        self.parked_count -= 1;
        self.set(key, sequence, Stage::InFlight);
        Some(claimed)
    }

    /// Forgets waiting events long past their time; returns the keys that lost one.
    fn drop_lost(&mut self, source: &str, now_ms: i64) -> Vec<String> {
        let lost_ms = i64::try_from(LOST_AFTER.as_millis()).unwrap_or(i64::MAX);
        let mut keys = Vec::new();
        for (key, events) in &mut self.busy {
            let before = events.len();
            events.retain(|sequence, stage| match stage {
                Stage::Waiting(due) if now_ms.saturating_sub(*due) > lost_ms => {
                    tracing::warn!(source, key = %key, sequence, "a deferred webhook event never came back; its key goes on without it");
                    false
                }
                _ => true,
            });
            if events.len() < before {
                keys.push(key.clone());
            }
        }
        self.busy.retain(|_, events| !events.is_empty());
        keys
    }
}

type Delivered = (Claimed, Outcome);

impl Dispatcher {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps for `wait` unless told to stop first; `false` means stop.
    async fn pause(&mut self, wait: Duration) -> bool {
        if self.stopping() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            changed = self.stop.changed() => changed.is_ok() && !*self.stop.borrow(),
        }
    }

    fn next_backoff(&self, backoff: Duration) -> Duration {
        (backoff * 2).min(self.policy.max_backoff)
    }

    pub async fn run(mut self) {
        let mut lanes = Lanes::default();
        let mut inflight: JoinSet<Delivered> = JoinSet::new();
        let mut active = false;
        let mut backoff = self.policy.initial_backoff;
        let mut next_due: Option<i64> = None;
        loop {
            if self.stopping() {
                break;
            }
            let now_active = match self.lease.as_mut() {
                Some(lease) => lease.active().await,
                None => true,
            };
            if active && !now_active {
                tracing::warn!(source = %self.source, "webhook dispatch lease lost; another instance delivers now");
                inflight.abort_all();
                lanes = Lanes::default();
                self.outbox.release();
            }
            if now_active && !active {
                match self.take_over().await {
                    Ok(known) => lanes = known,
                    Err(e) => {
                        tracing::warn!(source = %self.source, error = %e, "webhook outbox unreadable; retrying");
                        if !self.pause(backoff).await {
                            break;
                        }
                        backoff = self.next_backoff(backoff);
                        continue;
                    }
                }
            }
            active = now_active;
            if !active {
                if !self.pause(self.policy.poll_interval).await {
                    break;
                }
                continue;
            }

            // Claim while a slot is free.
            let mut idle = false;
            while inflight.len() < self.delivery.concurrency && lanes.parked_count < MAX_PARKED {
                match self.outbox.claim(&self.source).await {
                    Ok(Some(claimed)) => {
                        backoff = self.policy.initial_backoff;
                        if let Some(due) = self.admit(claimed, &mut lanes, &mut inflight).await {
                            next_due = Some(next_due.map_or(due, |d| d.min(due)));
                        }
                    }
                    Ok(None) => {
                        idle = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(source = %self.source, error = %e, "webhook outbox unreadable; retrying");
                        idle = true;
                        backoff = self.next_backoff(backoff);
                        break;
                    }
                }
            }
            for key in lanes.drop_lost(&self.source, now_ms()) {
                self.release_next(&key, &mut lanes, &mut inflight).await;
            }
            self.metrics.held_since(&self.source).store(lanes.ages.oldest(), std::sync::atomic::Ordering::Relaxed);

            // Wait for a delivery to end, a new event, a deferred one's time, or the poll.
            let mut wait = if idle {
                self.policy.poll_interval.max(backoff.min(self.policy.poll_interval))
            } else {
                Duration::ZERO
            };
            if let Some(due) = next_due {
                let until = u64::try_from(due.saturating_sub(now_ms()).max(0)).unwrap_or(0);
                wait = wait.min(Duration::from_millis(until));
                if until == 0 {
                    next_due = None;
                }
            }
            let notify = self.notify.clone();
            tokio::select! {
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Ok((claimed, outcome)) = done
                        && let Some(due) = self.finish(claimed, outcome, &mut lanes, &mut inflight).await {
                            next_due = Some(next_due.map_or(due, |d| d.min(due)));
                        }
                }
                () = notify.notified(), if inflight.len() < self.delivery.concurrency => {}
                () = tokio::time::sleep(wait), if inflight.len() < self.delivery.concurrency => {}
                changed = self.stop.changed() => if changed.is_err() || *self.stop.borrow() { break },
            }
        }
        inflight.abort_all();
        if let Some(lease) = &self.lease {
            lease.id.release().await;
        }
    }

    /// Becoming the active dispatcher: what an earlier one left claimed goes back to the
    /// queue, and the deferred events say which keys are busy.
    async fn take_over(&self) -> Result<Lanes, Unavailable> {
        // Alone (no lease), the gateway recovered the source at start-up, before it served.
        let pending = match self.lease {
            Some(_) => self.outbox.recover(&self.source).await?,
            None => self.outbox.pending(&self.source).await?,
        };
        let mut lanes = Lanes::default();
        for waiting in self.outbox.waiting(&self.source).await? {
            if let Some(key) = waiting.key {
                lanes.set(&key, waiting.sequence, Stage::Waiting(waiting.due_ms));
            }
        }
        if pending > 0 {
            tracing::info!(source = %self.source, pending, "webhook events pending; delivering");
        }
        Ok(lanes)
    }

    fn spawn(&self, claimed: Claimed, inflight: &mut JoinSet<Delivered>) {
        let (target, render, timeout) = (self.target.clone(), self.render.clone(), self.policy.attempt_timeout);
        inflight.spawn(async move {
            let outcome = deliver_once(&target, &render, &claimed.event, timeout).await;
            (claimed, outcome)
        });
    }

    /// Starts delivering `claimed`, or holds it behind an earlier event of its key; returns
    /// when it is due back if it was deferred.
    async fn admit(&mut self, claimed: Claimed, lanes: &mut Lanes, inflight: &mut JoinSet<Delivered>) -> Option<i64> {
        if let Some(reason) = claimed.event.refusal.clone() {
            self.set_aside(&claimed, reason, lanes).await;
            return None;
        }
        let Some(key) = claimed.event.key.clone() else {
            lanes.ages.add(claimed.event.received_at);
            self.spawn(claimed, inflight);
            return None;
        };
        let sequence = claimed.event.sequence;
        if lanes.may_go(&key, sequence) {
            lanes.set(&key, sequence, Stage::InFlight);
            lanes.ages.add(claimed.event.received_at);
            self.spawn(claimed, inflight);
            return None;
        }
        let now = now_ms();
        let blocked_for = lanes.blocked_for(&key, sequence, now);
        if self.outbox.max_hold().is_none_or(|hold| blocked_for < hold) {
            // Held here, claimed, until the events before it are done. A second copy takes
            // the place of the first, which is finished as the duplicate it is.
            if let Some(replaced) = lanes.hold(claimed)
                && self.outbox.holds(&self.source, &replaced).await
            {
                self.settle(&replaced, Step::Complete).await;
            }
            return None;
        }
        // Too long to hold a delivery (RabbitMQ): out of the queue until just after the event
        // before it is due back, then looked at again.
        self.park_out(claimed, blocked_for, lanes).await
    }

    /// Moves an event stored only for the dead letters (its payload failed the source's
    /// schema) straight there, undelivered. It never takes a place among its key's events: it
    /// is not delivered, so the ones after it do not wait for it.
    async fn set_aside(&mut self, claimed: &Claimed, reason: String, lanes: &mut Lanes) {
        let id = claimed.event.id.clone();
        match self.settle(claimed, Step::DeadLetter(reason.clone())).await {
            Some(Settled::Done) => {
                self.metrics.delivery(&self.source, Counted::DeadLettered);
                tracing::warn!(source = %self.source, id = %id, reason = %reason, "webhook event kept in the dead letters without delivery");
            }
            // Back in the queue with what its channel held: set aside when claimed again.
            Some(Settled::Lapsed) => self.forget_lapsed(lanes).await,
            None => {}
        }
    }

    /// Defers `claimed` for `blocked_for` and a little more, recording it as waiting.
    async fn park_out(&mut self, claimed: Claimed, blocked_for: Duration, lanes: &mut Lanes) -> Option<i64> {
        let key = claimed.event.key.clone()?;
        let sequence = claimed.event.sequence;
        let mut event = claimed.event.clone();
        event.parked = event.parked.saturating_add(1);
        let delay = park_delay(blocked_for);
        let due = now_ms().saturating_add(i64::try_from(delay.wait.as_millis()).unwrap_or(i64::MAX));
        match self.settle(&claimed, Step::Defer(Box::new(event), delay)).await? {
            Settled::Done => {
                // A copy in flight keeps its stage; otherwise it waits until it is due back.
                let stage = lanes.busy.entry(key).or_default().entry(sequence).or_insert(Stage::Waiting(due));
                if *stage != Stage::InFlight {
                    *stage = Stage::Waiting(due);
                }
                Some(due)
            }
            Settled::Lapsed => {
                if lanes.busy.get(&key).and_then(|events| events.get(&sequence)) != Some(&Stage::InFlight) {
                    lanes.returned(&key, sequence, now_ms());
                }
                self.forget_lapsed(lanes).await;
                None
            }
        }
    }

    /// Acts on a delivery's outcome; returns when the event is due back if it was deferred.
    async fn finish(
        &mut self,
        claimed: Claimed,
        outcome: Outcome,
        lanes: &mut Lanes,
        inflight: &mut JoinSet<Delivered>,
    ) -> Option<i64> {
        let event = claimed.event.clone();
        lanes.ages.remove(event.received_at);
        let (step, due) = match outcome {
            Outcome::Delivered => {
                self.metrics.delivery(&self.source, Counted::Delivered);
                tracing::info!(source = %self.source, id = %event.id, attempt = event.attempt + 1, "webhook event delivered");
                (Step::Complete, None)
            }
            Outcome::Refused(status) => {
                self.metrics.delivery(&self.source, Counted::DeadLettered);
                tracing::error!(source = %self.source, id = %event.id, %status, "upstream refused a webhook event; kept in the dead letters");
                (Step::DeadLetter(format!("the upstream answered {status}")), None)
            }
            Outcome::Retry(why) => match self.delivery.retry.get(event.attempt as usize) {
                Some(tier) => {
                    self.metrics.delivery(&self.source, Counted::Retried);
                    let delay = jittered(*tier);
                    tracing::warn!(
                        source = %self.source, id = %event.id, attempt = event.attempt + 1, error = %why,
                        retry_in_ms = delay.wait.as_millis() as u64, "webhook delivery failed; will retry"
                    );
                    let mut next: StoredEvent = event.clone();
                    next.attempt = next.attempt.saturating_add(1);
                    next.parked = 0;
                    let at = now_ms().saturating_add(i64::try_from(delay.wait.as_millis()).unwrap_or(i64::MAX));
                    (Step::Defer(Box::new(next), delay), Some((at, delay)))
                }
                None => {
                    self.metrics.delivery(&self.source, Counted::DeadLettered);
                    tracing::error!(source = %self.source, id = %event.id, attempts = event.attempt + 1, error = %why, "webhook delivery attempts exhausted; kept in the dead letters");
                    (Step::DeadLetter(format!("{} attempts failed; the last: {why}", event.attempt + 1)), None)
                }
            },
        };
        let settled = self.settle(&claimed, step).await?;
        let Some(key) = &event.key else { return due.filter(|_| settled == Settled::Done).map(|(at, _)| at) };
        match (settled, due) {
            (Settled::Done, Some((at, delay))) => {
                // Its key stays busy until it is back and done; nothing of it is released.
                lanes.set(key, event.sequence, Stage::Waiting(at));
                // What is held behind it would be held too long: out of the queue too.
                if self.outbox.max_hold().is_some_and(|hold| delay.wait >= hold) {
                    for parked in lanes.take_parked(key) {
                        let blocked_for = lanes.blocked_for(key, parked.event.sequence, now_ms());
                        self.park_out(parked, blocked_for, lanes).await;
                    }
                }
                return Some(at);
            }
            (Settled::Done, None) => {
                lanes.finish(key, event.sequence);
                // A copy of it held here is a duplicate of a finished event.
                if let Some(copy) = lanes.take_copy(key, event.sequence)
                    && self.outbox.holds(&self.source, &copy).await
                {
                    self.settle(&copy, Step::Complete).await;
                }
            }
            // Back in the queue as it was, and so is everything its channel held: the copies
            // claimed again take their places.
            (Settled::Lapsed, _) => {
                lanes.returned(key, event.sequence, now_ms());
                self.forget_lapsed(lanes).await;
            }
        }
        self.release_next(key, lanes, inflight).await;
        None
    }

    /// Starts `key`'s next held event if it may go now. A held claim that has lapsed is not
    /// delivered: its event is back in the queue, and still before the later ones.
    async fn release_next(&mut self, key: &str, lanes: &mut Lanes, inflight: &mut JoinSet<Delivered>) {
        while let Some(next) = lanes.unpark(key) {
            if self.outbox.holds(&self.source, &next).await {
                self.spawn(next, inflight);
                return;
            }
            lanes.ages.remove(next.event.received_at);
            lanes.returned(key, next.event.sequence, now_ms());
            self.forget_lapsed(lanes).await;
        }
    }

    /// Drops every held claim that has lapsed (its channel closed); each event stays known,
    /// due at once, so the later events of its key keep waiting for it.
    async fn forget_lapsed(&self, lanes: &mut Lanes) {
        let held: Vec<(String, u64, Claimed)> = lanes
            .parked
            .iter()
            .flat_map(|(key, parked)| parked.iter().map(|(sequence, c)| (key.clone(), *sequence, c.clone())))
            .collect();
        let now = now_ms();
        for (key, sequence, claimed) in held {
            if !self.outbox.holds(&self.source, &claimed).await {
                lanes.take_copy(&key, sequence);
                if lanes.busy.get(&key).and_then(|events| events.get(&sequence)) != Some(&Stage::InFlight) {
                    lanes.returned(&key, sequence, now);
                }
            }
        }
    }

    /// Applies `step` to `claimed` until the outbox takes it (the store may be down for a
    /// while) or the dispatcher stops; `None` when it stopped first (the event stays stored,
    /// and is delivered again later: at least once).
    async fn settle(&mut self, claimed: &Claimed, step: Step) -> Option<Settled> {
        let mut wait = self.policy.initial_backoff;
        loop {
            let done = match &step {
                Step::Complete => self.outbox.complete(&self.source, claimed).await,
                Step::Defer(event, delay) => self.outbox.defer(&self.source, claimed, event, *delay).await,
                Step::DeadLetter(reason) => self.outbox.dead_letter(&self.source, claimed, reason).await,
            };
            match done {
                Ok(settled) => return Some(settled),
                Err(e) => {
                    tracing::warn!(source = %self.source, error = %e, "cannot update the webhook outbox; retrying");
                    if !self.pause(wait).await {
                        return None;
                    }
                    wait = self.next_backoff(wait);
                }
            }
        }
    }
}

/// What becomes of a claimed event.
enum Step {
    Complete,
    /// Boxed: an event is far larger than the other steps.
    Defer(Box<StoredEvent>, Delay),
    DeadLetter(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth_either_way_and_varies() {
        let tier = Duration::from_secs(10);
        let waits: Vec<Duration> = (0..2_000).map(|_| jittered(tier).wait).collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_secs(8) && *w <= Duration::from_secs(12)));
        assert!(waits.iter().any(|w| *w < Duration::from_millis(8_500)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(11_500)));
        assert!(waits.iter().all(|w| jittered(tier).tier == tier && *w > Duration::ZERO));
    }

    #[test]
    fn an_event_parked_out_comes_back_just_after_the_one_before_it() {
        let delay = park_delay(Duration::from_secs(1800));
        assert_eq!(delay.wait, Duration::from_secs(1801));
        assert_eq!(delay.tier, Duration::from_secs(2048));
        assert_eq!(park_delay(Duration::ZERO).tier, Duration::from_secs(2));
    }

    #[test]
    fn a_key_is_blocked_until_its_latest_waiting_event_is_due() {
        let mut lanes = Lanes::default();
        let now = now_ms();
        lanes.set("k", 1, Stage::Waiting(now + 5_000));
        lanes.set("k", 2, Stage::Waiting(now + 9_000));
        assert_eq!(lanes.blocked_for("k", 3, now), Duration::from_secs(9));
        assert_eq!(lanes.blocked_for("k", 2, now), Duration::from_secs(5));
        assert_eq!(lanes.blocked_for("k", 1, now), Duration::ZERO);
        lanes.set("k", 0, Stage::InFlight);
        assert_eq!(lanes.blocked_for("k", 3, now), Duration::ZERO, "one in flight may end any moment");
        assert_eq!(lanes.blocked_for("other", 3, now), Duration::ZERO);
    }

    fn claimed(key: &str, sequence: u64) -> Claimed {
        let event = StoredEvent::new(format!("e{sequence}"), "s".into(), 0, None, Vec::new(), b"{}")
            .ordered(Some(key.to_owned()), sequence);
        Claimed::new(event, format!("t{sequence}"))
    }

    #[test]
    fn an_event_waits_only_behind_earlier_unfinished_events_of_its_key() {
        let mut lanes = Lanes::default();
        assert!(lanes.may_go("k", 5), "nothing known: no gap is waited on");
        lanes.set("k", 5, Stage::InFlight);
        assert!(!lanes.may_go("k", 5), "a second copy waits for the first");
        assert!(!lanes.may_go("k", 9));
        assert!(lanes.may_go("k", 3), "an earlier one is not held back by a later one");
        assert!(lanes.may_go("other", 9));
        lanes.set("k", 9, Stage::Parked);
        lanes.parked.entry("k".into()).or_default().insert(9, claimed("k", 9));
        lanes.parked_count = 1;
        assert!(lanes.unpark("k").is_none(), "5 is not finished");
        lanes.set("k", 5, Stage::Waiting(now_ms()));
        assert!(lanes.unpark("k").is_none(), "5 waits for a retry: still before 9");
        lanes.finish("k", 5);
        let next = lanes.unpark("k").expect("9 goes once 5 is done");
        assert_eq!(next.event.sequence, 9);
        assert_eq!(lanes.parked_count, 0);
        assert!(!lanes.may_go("k", 10));
        lanes.finish("k", 9);
        assert!(lanes.busy.is_empty() && lanes.parked.is_empty());
    }

    #[test]
    fn a_second_copy_of_an_event_in_flight_is_held_without_taking_its_stage() {
        let mut lanes = Lanes::default();
        lanes.set("k", 1, Stage::InFlight);
        assert!(lanes.hold(claimed("k", 1)).is_none());
        assert!(lanes.hold(claimed("k", 2)).is_none());
        assert_eq!(lanes.busy["k"][&1], Stage::InFlight, "the copy in flight keeps its stage");
        assert!(lanes.unpark("k").is_none(), "nothing goes while the first copy is in flight");
        assert!(lanes.hold(claimed("k", 2)).is_some(), "a second copy replaces the first");
        assert_eq!(lanes.parked_count, 2);

        // The copy in flight lapsed: the event is back in the queue, still before 2, and the
        // copy held here goes in its place.
        lanes.returned("k", 1, now_ms());
        let next = lanes.unpark("k").expect("the held copy of 1 goes");
        assert_eq!(next.event.sequence, 1);
        assert!(lanes.unpark("k").is_none(), "2 waits for 1");
        lanes.finish("k", 1);
        assert_eq!(lanes.take_copy("k", 2).map(|c| c.event.sequence), Some(2));
        assert_eq!(lanes.parked_count, 0);
        assert!(lanes.parked.is_empty());
    }

    #[test]
    fn waiting_events_long_past_their_time_stop_blocking_their_key() {
        let mut lanes = Lanes::default();
        let lost = now_ms() - i64::try_from(LOST_AFTER.as_millis()).unwrap() - 1_000;
        lanes.set("k", 1, Stage::Waiting(lost));
        lanes.set("j", 1, Stage::Waiting(now_ms()));
        assert_eq!(lanes.drop_lost("s", now_ms()), ["k"], "the key to look at again");
        assert!(lanes.may_go("k", 2));
        assert!(!lanes.may_go("j", 2));
    }
}
