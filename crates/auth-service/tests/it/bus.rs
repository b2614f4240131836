//! The Redis bus notices a subscription that went silent (SPEC §4 events, issue: lost
//! events keep sockets open): it PINGs with a deadline and, on a miss, reconnects and says
//! `Resubscribed`, so every cache it feeds is flushed. Tested through a delay proxy that holds
//! Redis's answers, the way a half-open connection behaves; Redis only.

use std::time::Duration;

use futures::StreamExt;
use platform::bus::{BusMessage, EventBus, RedisBus};

use crate::helpers::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscription_is_replaced_and_announced() {
    let Some(Backend::Postgres { redis_url, .. }) = Backend::shared() else { return };
    let hostport = redis_url.trim_start_matches("redis://").split(['/', '?']).next().unwrap_or_default().to_owned();
    let hostport = hostport.rsplit('@').next().unwrap_or_default().to_owned();
    let redis_addr = tokio::net::lookup_host(hostport)
        .await
        .expect("redis address")
        .find(std::net::SocketAddr::is_ipv4)
        .expect("an IPv4 address for redis");
    let proxy = testkit::DelayProxy::start(redis_addr).await;
    let through_proxy = format!("redis://{}", proxy.addr);
    let pool = platform::redis::connect(&redis_url).await.expect("redis");
    let bus = RedisBus::new(&through_proxy, pool)
        .expect("bus")
        .with_keepalive(Duration::from_millis(200), Duration::from_millis(300));
    let channel = format!("pc_test:{}:bus", uuid::Uuid::new_v4().simple());
    let mut events = bus.subscribe(&[&channel]).await.expect("subscribe");

    // A healthy connection answers every PING: nothing is replaced or announced.
    let quiet = tokio::time::timeout(Duration::from_millis(1000), events.next()).await;
    assert!(quiet.is_err(), "a healthy subscription yielded {quiet:?}");

    // Redis stops answering on the subscription's connection.
    proxy.hold();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    proxy.release();
    let announced = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(BusMessage::Resubscribed) => return true,
                Some(BusMessage::Event(_)) => {}
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(announced, Ok(true), "a silent subscription was never replaced");
    // And the new subscription delivers.
    bus.publish(&channel, "{}").await.expect("publish");
    let delivered = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
    assert!(matches!(delivered, Ok(Some(BusMessage::Event(_)))), "{delivered:?}");
}
