//! Redis pub/sub bus for distributed mode. Publishing uses the shared pool; each subscription
//! holds its own connection and reconnects with backoff, announcing every reconnect.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::Pool;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{BusMessage, Event, EventBus, Subscription};
use crate::{Unavailable, redis::client};

#[derive(Clone)]
pub struct RedisBus {
    pool: Pool,
    client: client::Client,
}

impl RedisBus {
    /// Kept for the keepalive test's API shape; today's bus has no keepalive.
    #[must_use]
    pub fn with_keepalive(self, _every: Duration, _deadline: Duration) -> Self {
        self
    }
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisBus")
    }
}

impl RedisBus {
    pub fn new(url: &str, pool: Pool) -> Result<Self, Unavailable> {
        let client = client::Client::open(url).map_err(|e| Unavailable::new("redis", e))?;
        Ok(Self { pool, client })
    }
}

async fn open(client: &client::Client, patterns: &[String]) -> Result<client::aio::PubSub, Unavailable> {
    let mut pubsub = client.get_async_pubsub().await.map_err(|e| Unavailable::new("redis", e))?;
    for pattern in patterns {
        pubsub.psubscribe(pattern).await.map_err(|e| Unavailable::new("redis", e))?;
    }
    Ok(pubsub)
}

/// Forwards messages until the connection drops, then reconnects; ends when the subscriber
/// goes away.
async fn pump(client: client::Client, patterns: Vec<String>, first: client::aio::PubSub, tx: mpsc::Sender<BusMessage>) {
    let mut current = Some(first);
    let mut backoff = Duration::from_millis(50);
    loop {
        let pubsub = match current.take() {
            Some(p) => p,
            None => match open(&client, &patterns).await {
                Ok(p) => {
                    backoff = Duration::from_millis(50);
                    tracing::info!("bus subscription re-established");
                    if tx.send(BusMessage::Resubscribed).await.is_err() {
                        return;
                    }
                    p
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bus subscription down; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {},
                        () = tx.closed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let mut messages = pubsub.into_on_message();
        loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(msg) => {
                        let event = Event {
                            channel: msg.get_channel_name().to_owned(),
                            payload: String::from_utf8_lossy(msg.get_payload_bytes()).into_owned(),
                        };
                        if tx.send(BusMessage::Event(event)).await.is_err() {
                            return;
                        }
                    }
                    None => break,
                },
                () = tx.closed() => return,
            }
        }
        tracing::warn!("bus subscription lost; reconnecting");
    }
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, channel: &str, payload: &str) -> Result<(), Unavailable> {
        let mut conn = self.pool.get().await.map_err(|e| Unavailable::new("redis", e))?;
        client::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| Unavailable::new("redis", e))
    }

    async fn subscribe(&self, patterns: &[&str]) -> Result<Subscription, Unavailable> {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        let first = open(&self.client, &patterns).await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(pump(self.client.clone(), patterns, first, tx));
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        Ok(stream.boxed())
    }

    async fn ping(&self) -> Result<(), Unavailable> {
        crate::redis::ping(&self.pool).await
    }
}
