//! The load: keep-alive HTTP/1.1 connections posting signed events, each sending its next
//! event when the last one was answered (a closed loop), for [`WARM_UP`] and then a counted
//! window. A `202` is an accepted event and its latency is sampled; a `503` (the store could
//! not take it) is counted apart; any other answer, or a broken connection, is a failure.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::{
    event::Events,
    sink,
    support::{Failures, Sender, WARM_UP, connect, cpu, quantile},
};

/// The header Meta's signature travels in.
const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// How long events accepted with the upstream fast may take to reach it after the run.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// Where one row's events go, and whose CPU they cost.
pub struct Target {
    pub name: String,
    /// `host:port`, also the `Host` header.
    pub authority: String,
    /// `/v1/webhooks/<source>`.
    pub path: String,
    pub events: Events,
    /// The gateway's process (with its descendants).
    pub pids: Vec<u32>,
    /// The store's processes (redis-server, RabbitMQ), counted apart.
    pub store_pids: Vec<u32>,
    /// The fast upstream's base URL, whose count says what was delivered; `None` when the
    /// source's upstream is down.
    pub upstream: Option<String>,
}

/// How the gateway answered one event.
pub enum Answer {
    Accepted,
    Unavailable,
    Other(String),
}

/// Posts event `n` and reads the answer to its end, replacing a connection the server closed
/// between requests first; `Err` is a broken connection.
pub async fn post(sender: &mut Sender, target: &Target, n: u64) -> Result<Answer, String> {
    if sender.ready().await.is_err() {
        *sender = connect(&target.authority).await?;
        sender.ready().await.map_err(|e| format!("a fresh connection was lost: {e}"))?;
    }
    let (body, signature) = target.events.event(n);
    let request = Request::builder()
        .method(Method::POST)
        .uri(&target.path)
        .header(header::HOST, &target.authority)
        .header(header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(Full::new(body))
        .expect("request");
    let response = sender.send_request(request).await.map_err(|e| format!("POST: {e}"))?;
    let status = response.status();
    let body: Bytes = response.into_body().collect().await.map_err(|e| format!("POST: body: {e}"))?.to_bytes();
    Ok(match status {
        StatusCode::ACCEPTED => Answer::Accepted,
        StatusCode::SERVICE_UNAVAILABLE => Answer::Unavailable,
        _ => {
            let shown: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            Answer::Other(format!("answered {status} with {shown:?}"))
        }
    })
}

/// What one closed-loop run measured.
pub struct Run {
    /// 202s in the counted window.
    pub accepted: u64,
    /// 202s from the first event on, warm-up included.
    pub accepted_total: u64,
    /// 503s from the first event on.
    pub unavailable: u64,
    /// Latency to each 202 of the counted window, ascending.
    pub latencies: Vec<Duration>,
    /// CPU per event accepted in the window, µs: the gateway's, and the store's.
    pub gateway_cpu_us: Option<f64>,
    pub store_cpu_us: Option<f64>,
    /// Events the upstream received from the first event to the end of the window (fast
    /// upstream only).
    pub delivered_during: Option<u64>,
    /// Seconds after the window until every accepted event had been delivered (fast upstream
    /// only; `None` if not within [`DRAIN_LIMIT`]).
    pub drained_after: Option<f64>,
}

/// Per connection: 202s in the window, 202s in all, 503s, latencies in the window.
type Counted = (u64, u64, u64, Vec<Duration>);

/// `connections` connections posting events as fast as they are answered, for [`WARM_UP`]
/// then `seconds`; with the upstream fast, then waits until every accepted event was
/// delivered. Failures, warm-up included, are recorded in `failures`.
pub async fn closed_loop(target: &Arc<Target>, connections: usize, seconds: Duration, failures: &Failures) -> Run {
    let delivered_before = match &target.upstream {
        Some(base) => sink::delivered(base).await.map_err(|e| failures.record(e)).ok(),
        None => None,
    };
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + WARM_UP;
    let end = start + seconds;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (target, next, failures) = (target.clone(), next.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut counted: Counted = (0, 0, 0, Vec::new());
            let mut sender = match connect(&target.authority).await {
                Ok(sender) => sender,
                Err(e) => {
                    failures.record(e);
                    return counted;
                }
            };
            loop {
                let sent = Instant::now();
                let answer = post(&mut sender, &target, next.fetch_add(1, Ordering::Relaxed)).await;
                let now = Instant::now();
                match answer {
                    Ok(Answer::Accepted) => {
                        counted.1 += 1;
                        if sent >= start && now < end {
                            counted.0 += 1;
                            counted.3.push(now - sent);
                        }
                    }
                    Ok(Answer::Unavailable) => counted.2 += 1,
                    Ok(Answer::Other(what)) => failures.record(what),
                    Err(e) => {
                        failures.record(e);
                        sender = match connect(&target.authority).await {
                            Ok(sender) => sender,
                            Err(e) => {
                                failures.record(e);
                                return counted;
                            }
                        };
                    }
                }
                if now >= end {
                    return counted;
                }
            }
        }));
    }
    let gateway_cpu = tokio::spawn(cpu::ticks_between(target.pids.clone(), start, end));
    let store_cpu = tokio::spawn(cpu::ticks_between(target.store_pids.clone(), start, end));
    let delivered_at_end = target.upstream.clone().map(|base| {
        tokio::spawn(async move {
            tokio::time::sleep_until(end.into()).await;
            sink::delivered(&base).await
        })
    });
    let (mut accepted, mut accepted_total, mut unavailable, mut latencies) = (0, 0, 0, Vec::new());
    for task in tasks {
        let (window, total, refused, samples) = task.await.expect("load task");
        accepted += window;
        accepted_total += total;
        unavailable += refused;
        latencies.extend(samples);
    }
    latencies.sort_unstable();
    let delivered_during = match (delivered_before, delivered_at_end) {
        (Some(before), Some(task)) => {
            task.await.expect("count task").map_err(|e| failures.record(e)).ok().map(|n| n.saturating_sub(before))
        }
        _ => None,
    };
    let drained_after = match (&target.upstream, delivered_before) {
        (Some(base), Some(before)) => drain(base, before + accepted_total, end, failures).await,
        _ => None,
    };
    Run {
        accepted,
        accepted_total,
        unavailable,
        latencies,
        gateway_cpu_us: cpu::micros_each(gateway_cpu.await.expect("cpu task"), accepted),
        store_cpu_us: cpu::micros_each(store_cpu.await.expect("cpu task"), accepted),
        delivered_during,
        drained_after,
    }
}

/// Waits until the upstream at `base` has counted `expected` deliveries, answering the
/// seconds from `end` until it had (`None` after [`DRAIN_LIMIT`]).
pub async fn drain(base: &str, expected: u64, end: Instant, failures: &Failures) -> Option<f64> {
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        match sink::delivered(base).await {
            Ok(count) if count >= expected => return Some(end.elapsed().as_secs_f64()),
            Ok(_) => {}
            Err(e) => {
                failures.record(e);
                return None;
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// p50, p99 and the largest of `run`'s latencies.
pub fn quantiles(run: &Run) -> (Duration, Duration, Duration) {
    (quantile(&run.latencies, 0.50), quantile(&run.latencies, 0.99), run.latencies.last().copied().unwrap_or_default())
}
