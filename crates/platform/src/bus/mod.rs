//! The event bus: services publish JSON events on named channels (`auth:session.terminated`…)
//! and subscribers (caches, socket nodes, tests) receive them. Redis pub/sub in distributed
//! mode, a broadcast channel in embedded mode.
//!
//! Pub/sub loses what is sent while a subscriber is disconnected, so a subscription yields
//! [`BusMessage::Resubscribed`] whenever messages may have been missed; every cache fed by
//! events must be flushed when it sees one.

mod memory;
mod redis;
mod retry;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use memory::MemoryBus;
pub use redis::RedisBus;
pub use retry::RetryingBus;

use crate::Unavailable;

/// One published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub channel: String,
    pub payload: String,
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    Event(Event),
    /// The subscription was re-established (or fell behind); events may have been lost.
    Resubscribed,
}

pub type Subscription = BoxStream<'static, BusMessage>;

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), Unavailable>;

    /// Subscribes to channel patterns (`auth:*` or an exact name). Returns once the
    /// subscription is live, so anything published afterwards is delivered.
    async fn subscribe(&self, patterns: &[&str]) -> Result<Subscription, Unavailable>;

    /// Whether the bus is reachable now (readiness).
    async fn ping(&self) -> Result<(), Unavailable>;
}

/// Pattern rule shared by both implementations: a trailing `*` matches any suffix, otherwise
/// the name must be equal (the subset of Redis glob patterns Portcullis uses).
pub(crate) fn matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn patterns() {
        assert!(super::matches("auth:*", "auth:user.login"));
        assert!(super::matches("auth:user.login", "auth:user.login"));
        assert!(!super::matches("auth:user.login", "auth:user.logout"));
        assert!(!super::matches("auth:*", "ws:publish"));
    }
}
