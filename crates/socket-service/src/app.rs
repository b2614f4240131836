//! Running the socket service: the bus follower that delivers publishes and closes revoked
//! connections, the background re-checks of every connection, and `run`, which the binary,
//! the all-in-one binary and the tests all call.

use std::{future::Future, time::Duration};

use futures::StreamExt;
use platform::{Unavailable, bus::BusMessage};
use tokio::net::TcpListener;

use crate::{protocol::close, service::SocketService};

/// How long shutdown waits for connections to finish their close handshake.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

impl SocketService {
    /// Re-checks every open connection every `SOCKET_RECHECK_INTERVAL` (SPEC §7), so that
    /// no connection outlives its credential by more than that even when events were lost.
    fn spawn_rechecks(&self) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        let every = self.inner.config.recheck_interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if !service.inner.hub.is_empty() {
                    service.recheck().await;
                }
            }
        })
    }

    /// Follows the bus: publishes for this node, account events and revocations. Returns once
    /// the subscription is live.
    pub async fn follow(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, Unavailable> {
        let bus = self.inner.deps.bus.clone();
        let cache_follower = self.inner.auth.follow(bus.clone()).await?;
        let mut events = bus.subscribe(&[auth_contract::events::ALL, &self.inner.publish_channel]).await?;
        let service = self.clone();
        let follower = tokio::spawn(async move {
            while let Some(message) = events.next().await {
                match message {
                    BusMessage::Event(event) if event.channel == service.inner.publish_channel => {
                        service.deliver(&event.payload);
                    }
                    BusMessage::Event(event) => {
                        let now = service.inner.deps.clock.now();
                        service.inner.hub.apply_auth_event(&event.channel, &event.payload, now);
                    }
                    BusMessage::Resubscribed => {
                        let service = service.clone();
                        tokio::spawn(async move {
                            service.revalidate_all().await;
                        });
                    }
                }
            }
            tracing::warn!("bus subscription ended");
        });
        Ok(vec![cache_follower, follower, self.spawn_rechecks()])
    }
}

/// Serves the socket service on `listener` until `shutdown` completes, then closes every
/// connection with 1001 and waits (briefly) for them to finish.
pub async fn run(
    service: SocketService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let followers = service.follow().await.map_err(std::io::Error::other)?;
    let router = crate::http::router(service.clone());
    let closing = service.clone();
    let limits = service.config().listener;
    let result = platform::serve::serve(listener, router, limits, async move {
        shutdown.await;
        closing.inner.hub.close_all(close::GOING_AWAY);
    })
    .await;
    // Upgraded connections are not tracked by the HTTP server: wait for them here.
    service.inner.hub.close_all(close::GOING_AWAY);
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    while !service.inner.hub.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    followers.iter().for_each(tokio::task::JoinHandle::abort);
    result
}
