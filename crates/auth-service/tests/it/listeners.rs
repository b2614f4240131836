//! Slow clients (SPEC §6): a peer that never finishes its request head, or idles on a
//! kept-alive connection, is dropped after `HTTP_HEADER_READ_TIMEOUT` instead of holding a
//! connection (and a task) for ever.

use std::time::Duration;

use crate::helpers::*;

async fn slow_and_idle_clients_are_dropped(backend: Backend) {
    let app = spawn_app_with(backend, &[("HTTP_HEADER_READ_TIMEOUT", "300ms")]).await;
    let slow = slow_client_is_dropped_after(app.http_addr, Duration::from_secs(3)).await;
    assert!(slow.is_some_and(|t| t >= Duration::from_millis(250)), "slow client: {slow:?}");
    let idle = idle_keep_alive_is_dropped_after(app.http_addr, Duration::from_secs(3)).await;
    assert!(idle.is_some(), "idle keep-alive client kept");
}

crate::on_both_backends!(slow_and_idle_clients_are_dropped);
