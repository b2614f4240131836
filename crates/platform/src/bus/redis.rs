//! Redis pub/sub bus for distributed mode. Publishing uses the shared pool; each subscription
//! holds its own connection and reconnects with backoff, announcing every reconnect. A
//! subscription PINGs its connection every few seconds with a deadline: a connection that has
//! gone silent (half-open, a stalled proxy) delivers nothing and reports nothing, so a missed
//! PONG counts as a loss, and the subscription is replaced and announced as `Resubscribed`.

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
    keepalive: Keepalive,
}

/// How often a subscription's connection is PINGed, and how long the PONG may take.
#[derive(Debug, Clone, Copy)]
struct Keepalive {
    every: Duration,
    deadline: Duration,
}

const KEEPALIVE: Keepalive = Keepalive { every: Duration::from_secs(5), deadline: Duration::from_secs(3) };

impl RedisBus {
    /// Another PING period and deadline (tests use short ones).
    #[must_use]
    pub fn with_keepalive(mut self, every: Duration, deadline: Duration) -> Self {
        self.keepalive = Keepalive { every, deadline };
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
        Ok(Self { pool, client, keepalive: KEEPALIVE })
    }
}

async fn open(
    client: &client::Client,
    patterns: &[String],
    deadline: Duration,
) -> Result<client::aio::PubSub, Unavailable> {
    // A server that accepts but never answers must not hang the subscription for good.
    let opening = async {
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| Unavailable::new("redis", e))?;
        for pattern in patterns {
            pubsub.psubscribe(pattern).await.map_err(|e| Unavailable::new("redis", e))?;
        }
        Ok(pubsub)
    };
    tokio::time::timeout(deadline.saturating_mul(2), opening)
        .await
        .map_err(|_| Unavailable::new("redis", "no answer to SUBSCRIBE"))?
}

/// Forwards messages until the connection drops, then reconnects; ends when the subscriber
/// goes away.
async fn pump(
    client: client::Client,
    patterns: Vec<String>,
    first: client::aio::PubSub,
    keepalive: Keepalive,
    tx: mpsc::Sender<BusMessage>,
) {
    let mut current = Some(first);
    let mut backoff = Duration::from_millis(50);
    loop {
        let pubsub = match current.take() {
            Some(p) => p,
            None => match open(&client, &patterns, keepalive.deadline).await {
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
        let (mut sink, mut messages) = pubsub.split();
        let mut ping = tokio::time::interval(keepalive.every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.reset();
        loop {
            tokio::select! {
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(keepalive.deadline, sink.ping::<client::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        tracing::warn!("bus subscription did not answer PING in time; replacing it");
                        break;
                    }
                }
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
        let first = open(&self.client, &patterns, self.keepalive.deadline).await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(pump(self.client.clone(), patterns, first, self.keepalive, tx));
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
        Ok(stream.boxed())
    }

    async fn ping(&self) -> Result<(), Unavailable> {
        crate::redis::ping(&self.pool).await
    }
}
