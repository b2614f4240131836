//! Publishing that survives a bus outage: an event whose `PUBLISH` fails waits in a bounded
//! queue and is sent again, in order, by a background task with backoff, instead of being
//! dropped. The database stays the truth (every cache fed by events also expires within a
//! minute, and long-lived connections are re-checked), so the queue only shortens how stale a
//! cache can be; when it is full the oldest event is dropped and counted.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;

use super::{EventBus, Subscription};
use crate::Unavailable;

/// Events kept while the bus is down.
pub const MAX_PENDING: usize = 10_000;
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Queue {
    pending: VecDeque<(String, String)>,
    /// Whether a task is draining the queue.
    draining: bool,
}

struct Shared {
    bus: Arc<dyn EventBus>,
    queue: Mutex<Queue>,
    capacity: usize,
    dropped: AtomicU64,
    failures: AtomicU64,
}

/// An [`EventBus`] whose publishes are retried; subscriptions and pings pass through.
#[derive(Clone)]
pub struct RetryingBus {
    shared: Arc<Shared>,
}

impl RetryingBus {
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Self::with_capacity(bus, MAX_PENDING)
    }

    pub fn with_capacity(bus: Arc<dyn EventBus>, capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                bus,
                queue: Mutex::default(),
                capacity: capacity.max(1),
                dropped: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// Events waiting to be published again.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// `PUBLISH` attempts that failed (each is retried).
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// Events given up on because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues an event behind the ones already waiting, and makes sure a task drains them.
    fn enqueue(&self, channel: &str, payload: &str) {
        let start = {
            let mut queue = self.lock();
            if queue.pending.len() >= self.shared.capacity {
                queue.pending.pop_front();
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!("event queue full: the oldest unpublished event was dropped");
            }
            queue.pending.push_back((channel.to_owned(), payload.to_owned()));
            !std::mem::replace(&mut queue.draining, true)
        };
        if start {
            tokio::spawn(self.clone().drain());
        }
    }

    async fn drain(self) {
        let mut wait = FIRST_RETRY;
        loop {
            let next = {
                let mut queue = self.lock();
                match queue.pending.front() {
                    Some(event) => event.clone(),
                    None => {
                        queue.draining = false;
                        return;
                    }
                }
            };
            match self.shared.bus.publish(&next.0, &next.1).await {
                Ok(()) => {
                    self.lock().pending.pop_front();
                    wait = FIRST_RETRY;
                }
                Err(err) => {
                    self.shared.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %err, pending = self.pending(), "bus still down; events wait");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY);
                }
            }
        }
    }
}

#[async_trait]
impl EventBus for RetryingBus {
    /// Publishes now when nothing is waiting; otherwise (or when the bus fails) queues, so
    /// events keep their order. Never fails: a queued event is published later.
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), Unavailable> {
        if self.lock().pending.is_empty() {
            match self.shared.bus.publish(channel, payload).await {
                Ok(()) => return Ok(()),
                Err(err) => {
                    self.shared.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %err, %channel, "event publish failed; it will be retried");
                }
            }
        }
        self.enqueue(channel, payload);
        Ok(())
    }

    async fn subscribe(&self, patterns: &[&str]) -> Result<Subscription, Unavailable> {
        self.shared.bus.subscribe(patterns).await
    }

    async fn ping(&self) -> Result<(), Unavailable> {
        self.shared.bus.ping().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use futures::StreamExt;

    use super::*;
    use crate::bus::{BusMessage, MemoryBus};

    /// A bus that refuses to publish while `down` is set (the fault hook of these tests).
    struct Flaky {
        inner: MemoryBus,
        down: AtomicBool,
    }

    #[async_trait]
    impl EventBus for Flaky {
        async fn publish(&self, channel: &str, payload: &str) -> Result<(), Unavailable> {
            if self.down.load(Ordering::SeqCst) {
                return Err(Unavailable::new("redis", "connection refused"));
            }
            self.inner.publish(channel, payload).await
        }

        async fn subscribe(&self, patterns: &[&str]) -> Result<Subscription, Unavailable> {
            self.inner.subscribe(patterns).await
        }

        async fn ping(&self) -> Result<(), Unavailable> {
            self.inner.ping().await
        }
    }

    #[tokio::test]
    async fn events_published_during_an_outage_arrive_in_order_afterwards() {
        let flaky = Arc::new(Flaky { inner: MemoryBus::default(), down: AtomicBool::new(true) });
        let bus = RetryingBus::with_capacity(flaky.clone(), 3);
        let mut events = bus.subscribe(&["auth:*"]).await.unwrap_or_else(|e| panic!("{e}"));
        for i in 0..4 {
            assert!(bus.publish("auth:user.logout", &i.to_string()).await.is_ok());
        }
        assert_eq!((bus.pending(), bus.dropped()), (3, 1), "bounded: the oldest is dropped");
        assert!(bus.failures() >= 1);
        flaky.down.store(false, Ordering::SeqCst);
        let mut got = Vec::new();
        while got.len() < 3 {
            match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
                Ok(Some(BusMessage::Event(event))) => got.push(event.payload),
                other => panic!("no event: {other:?}"),
            }
        }
        assert_eq!(got, ["1", "2", "3"]);
        // Once drained, publishing is direct again.
        assert!(bus.publish("auth:user.logout", "4").await.is_ok());
        assert_eq!(bus.pending(), 0);
    }
}
