//! In-process bus for embedded mode: one broadcast channel shared by every service in the
//! process.

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::broadcast;

use super::{BusMessage, Event, EventBus, Subscription, matches};
use crate::Unavailable;

#[derive(Debug, Clone)]
pub struct MemoryBus {
    sender: broadcast::Sender<Event>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        let (sender, _) = broadcast::channel(4096);
        Self { sender }
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), Unavailable> {
        // Having no subscriber is not an error: nobody needed to hear it.
        let _receivers = self.sender.send(Event { channel: channel.to_owned(), payload: payload.to_owned() });
        Ok(())
    }

    async fn subscribe(&self, patterns: &[&str]) -> Result<Subscription, Unavailable> {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        let receiver = self.sender.subscribe();
        let stream = futures::stream::unfold(receiver, move |mut rx| {
            let patterns = patterns.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(event) if patterns.iter().any(|p| matches(p, &event.channel)) => {
                            return Some((BusMessage::Event(event), rx));
                        }
                        Ok(_) => {}
                        // The subscriber fell behind and messages were dropped: same as a
                        // reconnect for anyone caching from events.
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            return Some((BusMessage::Resubscribed, rx));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn ping(&self) -> Result<(), Unavailable> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_matching_events_only() {
        let bus = MemoryBus::default();
        let mut sub = bus.subscribe(&["auth:*"]).await.unwrap_or_else(|e| panic!("{e}"));
        bus.publish("other:x", "{}").await.unwrap_or_else(|e| panic!("{e}"));
        bus.publish("auth:user.login", "{\"a\":1}").await.unwrap_or_else(|e| panic!("{e}"));
        let got = sub.next().await;
        assert_eq!(
            got,
            Some(BusMessage::Event(Event { channel: "auth:user.login".into(), payload: "{\"a\":1}".into() }))
        );
    }
}
