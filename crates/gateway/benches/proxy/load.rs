//! The load: keep-alive HTTP/1.1 connections sending GET and POST (1 KiB body) in turn, every
//! answer checked (200 and exactly the upstream's body, or the request is a failure); a closed
//! loop for the maximum throughput, an open loop for latency at a fixed rate, and a fixed
//! number of requests for the instruction counts.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::{
    EXPECTED_BODY, POST_BODY_LEN,
    support::{Failures, Sender, WARM_UP, cpu, quantile},
};

/// Connections the open-loop load spreads over.
pub const OPEN_LOOP_CONNECTIONS: usize = 64;
/// How long unanswered requests are awaited once an open-loop run stops releasing them.
const DRAIN: Duration = Duration::from_secs(3);
/// Where a target is asked, and with what.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    /// `host:port`, also the `Host` header.
    pub authority: String,
    pub path: String,
    pub authorization: HeaderValue,
    /// The processes whose CPU (with their descendants') the target costs.
    pub pids: Vec<u32>,
    pub post_body: Bytes,
}

pub async fn connect(target: &Target) -> Result<Sender, String> {
    crate::support::connect(&target.authority).await
}

/// One request (a POST with the 1 KiB body when `post`, else a GET), its answer read to the
/// end: `Err` says what was wrong unless it was 200 with exactly [`EXPECTED_BODY`]. A
/// connection the server closed between requests (nginx after `keepalive_requests`, or an
/// answer with `Connection: close`) is replaced first: no request was lost on it.
pub async fn call(sender: &mut Sender, target: &Target, post: bool) -> Result<(), String> {
    if sender.ready().await.is_err() {
        *sender = connect(target).await?;
        sender.ready().await.map_err(|e| format!("a fresh connection was lost: {e}"))?;
    }
    let (method, body) = if post { (Method::POST, target.post_body.clone()) } else { (Method::GET, Bytes::new()) };
    let mut request = Request::builder().method(method.clone()).uri(&target.path);
    if post {
        request = request.header(header::CONTENT_TYPE, "application/octet-stream");
    }
    let request = request
        .header(header::HOST, &target.authority)
        .header(header::AUTHORIZATION, target.authorization.clone())
        .body(Full::new(body))
        .expect("request");
    let response = sender.send_request(request).await.map_err(|e| format!("{method}: {e}"))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| format!("{method}: body: {e}"))?.to_bytes();
    if status != StatusCode::OK || body != EXPECTED_BODY {
        let shown: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Err(format!("{method} answered {status} with {:?}", shown));
    }
    Ok(())
}

/// Asks `target` a GET and a POST on a fresh connection: both must pass [`call`].
pub async fn probe(target: &Target) -> Result<(), String> {
    let mut sender = connect(target).await?;
    call(&mut sender, target, false).await?;
    call(&mut sender, target, true).await
}

/// The body every POST carries, of the size the upstream checks.
pub fn post_body() -> Bytes {
    Bytes::from(vec![b'x'; POST_BODY_LEN])
}

pub struct Throughput {
    pub per_second: f64,
    /// CPU of the target's processes over the counted window, per answered request.
    pub cpu_us_per_request: Option<f64>,
}

/// Closed loop: `connections` connections, each sending its next request as soon as the last
/// one answered, for [`WARM_UP`] then `seconds`, counting the answers that passed in the
/// second window. Every failed request, warm-up included, is recorded in `failures`.
pub async fn max_throughput(target: &Target, connections: usize, seconds: Duration, failures: &Failures) -> Throughput {
    let ok = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + WARM_UP;
    let end = start + seconds;
    let mut tasks = Vec::new();
    for i in 0..connections {
        let (target, ok, failures) = (target.clone(), ok.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = match connect(&target).await {
                Ok(sender) => sender,
                Err(e) => return failures.record(e),
            };
            // Half the connections start with a POST, so the mix is even at every moment.
            let mut post = i % 2 == 1;
            loop {
                let answered = call(&mut sender, &target, post).await;
                post = !post;
                let now = Instant::now();
                if now >= end {
                    break;
                }
                match answered {
                    Ok(()) if now >= start => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(()) => {}
                    Err(e) => {
                        failures.record(e);
                        sender = match connect(&target).await {
                            Ok(sender) => sender,
                            Err(e) => return failures.record(e),
                        };
                    }
                }
            }
        }));
    }
    // The target's CPU over exactly the counted window.
    let cpu = tokio::spawn(cpu::ticks_between(target.pids.clone(), start, end));
    for task in tasks {
        task.await.expect("load task");
    }
    let answered = ok.load(Ordering::Relaxed);
    let ticks = cpu.await.expect("cpu task");
    Throughput {
        per_second: answered as f64 / seconds.as_secs_f64(),
        cpu_us_per_request: cpu::micros_each(ticks, answered),
    }
}

#[derive(Clone)]
pub struct Latency {
    pub offered: f64,
    pub achieved: f64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Requests released in the window but unanswered (or not even sent) [`DRAIN`] after the
    /// last release.
    pub unanswered: u64,
}

impl Latency {
    /// The target kept up with the offered rate.
    pub fn kept_up(&self) -> bool {
        self.unanswered == 0 && self.achieved >= 0.97 * self.offered
    }
}

/// Open loop at `rate` requests per second: a pacing thread releases requests on schedule,
/// whatever the answers; each takes an idle connection from the pool (waiting if none is) and
/// its latency runs from its release to the end of its response. Failed requests are recorded
/// in `failures` and not sampled.
pub async fn latency_at(target: &Target, rate: f64, seconds: Duration, failures: &Failures) -> Latency {
    let (pool_tx, mut pool_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..OPEN_LOOP_CONNECTIONS {
        match connect(target).await {
            Ok(sender) => pool_tx.send(sender).expect("pool"),
            Err(e) => failures.record(e),
        }
    }
    let (release_tx, mut release_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let start = Instant::now() + WARM_UP;
    let end = start + seconds;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let released = Arc::new(AtomicU64::new(0));
    let pacer_released = released.clone();
    let pacer = std::thread::spawn(move || {
        let mut next = Instant::now();
        while next < end {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
                continue;
            }
            while next <= now {
                if release_tx.send(now).is_err() {
                    return;
                }
                if now >= start {
                    pacer_released.fetch_add(1, Ordering::Relaxed);
                }
                next += interval;
            }
        }
    });

    let samples = Arc::new(Mutex::new(Vec::<Duration>::with_capacity((rate * seconds.as_secs_f64() * 1.1) as usize)));
    let failed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut dispatcher = {
        let (target, samples, failed, done, failures) =
            (target.clone(), samples.clone(), failed.clone(), done.clone(), failures.clone());
        tokio::spawn(async move {
            let mut post = false;
            while let Some(stamp) = release_rx.recv().await {
                let counted = stamp >= start;
                let Some(mut sender) = pool_rx.recv().await else { break };
                post = !post;
                let (target, samples, failed, pool_tx, done, failures) =
                    (target.clone(), samples.clone(), failed.clone(), pool_tx.clone(), done.clone(), failures.clone());
                tokio::spawn(async move {
                    let answered = call(&mut sender, &target, post).await;
                    let elapsed = stamp.elapsed();
                    match answered {
                        Ok(()) => {
                            if counted && !done.load(Ordering::Relaxed) {
                                samples.lock().expect("samples").push(elapsed);
                            }
                        }
                        Err(e) => {
                            if counted {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                            failures.record(e);
                            match connect(&target).await {
                                Ok(fresh) => sender = fresh,
                                Err(e) => return failures.record(e),
                            }
                        }
                    }
                    let _ = pool_tx.send(sender);
                });
            }
        })
    };
    pacer.join().expect("pacer");
    // Requests still queued for a connection after this are counted as unanswered.
    let _ = tokio::time::timeout(DRAIN, &mut dispatcher).await;
    dispatcher.abort();
    // Wait for the last answers, up to the same limit.
    let deadline = Instant::now() + DRAIN;
    loop {
        let answered = samples.lock().expect("samples").len() as u64 + failed.load(Ordering::Relaxed);
        if answered >= released.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut samples = std::mem::take(&mut *samples.lock().expect("samples"));
    samples.sort_unstable();
    let released = released.load(Ordering::Relaxed);
    Latency {
        offered: rate,
        achieved: samples.len() as f64 / seconds.as_secs_f64(),
        p50: quantile(&samples, 0.50),
        p90: quantile(&samples, 0.90),
        p99: quantile(&samples, 0.99),
        max: samples.last().copied().unwrap_or_default(),
        unanswered: released.saturating_sub(samples.len() as u64 + failed.load(Ordering::Relaxed)),
    }
}

/// Exactly `total` requests (GET and POST in turn) over `connections` connections, each
/// checked; the first failure ends it.
pub async fn send(target: &Target, total: u64, connections: u64) -> Result<(), String> {
    let mut tasks = Vec::new();
    for i in 0..connections {
        let share = total / connections + u64::from(i < total % connections);
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(&target).await?;
            for n in 0..share {
                call(&mut sender, &target, (n + i) % 2 == 1).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}
