//! The gateway benchmark scenario of SPEC §10: the same minimal upstream measured direct,
//! through the gateway with a cached credential, and through its peers (nginx `proxy_pass`,
//! HAProxy, Caddy `reverse_proxy` with no authentication; Caddy `forward_auth` in front of the
//! auth service). `cargo xtask bench` (or `cargo xtask bench gateway`) starts every server in
//! a process of its own and runs this load generator with:
//!
//! - `BENCH_UPSTREAM_URL`: the upstream itself (`http://127.0.0.1:port`), and
//!   `BENCH_UPSTREAM_PID` its process;
//! - `BENCH_TARGETS`: `name|url|pid,pid;…`, every proxy in front of that upstream (the
//!   gateway with a `/v1/user/bench` route to it first) and the processes whose CPU it costs,
//!   counted with their descendants;
//! - `BENCH_AUTH_HTTP`: the auth service, where a user signs up for the Bearer token (or
//!   `BENCH_TOKEN` to pass one in);
//! - `BENCH_CONNECTIONS` (default 32), `BENCH_SECONDS` (default 5): the load's shape;
//! - `BENCH_SUMMARY` (optional): where to write the JSON summary (a Markdown table is written
//!   beside it).
//!
//! For each target: (1) the maximum throughput, a closed loop of `BENCH_CONNECTIONS`
//! keep-alive HTTP/1.1 connections each sending its next request when the last answered;
//! (2) latency at a fixed offered rate, half of the direct maximum (open loop: a pacing thread
//! releases requests on schedule, whatever the answers, onto a pool of 64 connections; a
//! request's latency runs from its release to the end of its response body, so waiting for a
//! free connection counts). Every figure follows a one-second warm-up on the same connections,
//! which also puts the credential in the gateway's cache.
//!
//! The same binary with `BENCH_SERVE_UPSTREAM=<port>` is the upstream instead: a hyper HTTP/1.1
//! server answering every request `200 ok`. Without `BENCH_UPSTREAM_URL` it does nothing, so
//! `cargo bench --workspace` passes through it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// The route the gateway is configured with (and the path every target is asked for).
const PATH: &str = "/v1/user/bench/item";
const WARM_UP: Duration = Duration::from_secs(1);
/// Connections the open-loop load spreads over.
const OPEN_LOOP_CONNECTIONS: usize = 64;
/// How long unanswered requests are awaited once an open-loop run stops releasing them.
const DRAIN: Duration = Duration::from_secs(3);

fn main() {
    if let Ok(port) = std::env::var("BENCH_SERVE_UPSTREAM") {
        serve_upstream(port.parse().expect("BENCH_SERVE_UPSTREAM is a port"));
        return;
    }
    let Ok(upstream) = std::env::var("BENCH_UPSTREAM_URL") else {
        eprintln!("proxy bench: BENCH_UPSTREAM_URL not set; run it with `cargo xtask bench gateway`");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run(upstream));
}

// ---------------------------------------------------------------------------------------
// The upstream

fn serve_upstream(port: u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the upstream");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header(header::CONTENT_TYPE, "text/plain")
                            .body(Full::new(Bytes::from_static(b"ok\n")))
                            .expect("response"),
                    )
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}

// ---------------------------------------------------------------------------------------
// The load generator

#[derive(Clone)]
struct Target {
    name: String,
    /// `host:port`, also the `Host` header.
    authority: String,
    token: Arc<str>,
    /// The processes whose CPU (with their descendants') the target costs.
    pids: Vec<u32>,
}

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User plus system CPU ticks of `roots` and every process descending from them (nginx's
/// workers, say), from `/proc`. `None` when `/proc` cannot be read.
fn tree_ticks(roots: &[u32]) -> Option<u64> {
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Fields after the command name, which may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
        processes.push((pid, number(1) as u32, number(11) + number(12)));
    }
    let mut counted: Vec<u32> = roots.to_vec();
    let mut grew = true;
    while grew {
        grew = false;
        for (pid, parent, _) in &processes {
            if counted.contains(parent) && !counted.contains(pid) {
                counted.push(*pid);
                grew = true;
            }
        }
    }
    Some(processes.iter().filter(|(pid, _, _)| counted.contains(pid)).map(|(_, _, ticks)| ticks).sum())
}

async fn connect(target: &Target) -> SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(&target.authority).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    sender
}

/// One request, its body read to the end; whether it answered 200.
async fn call(sender: &mut SendRequest<Empty<Bytes>>, target: &Target) -> bool {
    if sender.ready().await.is_err() {
        return false;
    }
    let request = Request::get(PATH)
        .header(header::HOST, &target.authority)
        .header(header::AUTHORIZATION, format!("Bearer {}", target.token))
        .body(Empty::new())
        .expect("request");
    match sender.send_request(request).await {
        Ok(response) => {
            let ok = response.status() == StatusCode::OK;
            ok && response.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

struct Throughput {
    per_second: f64,
    errors: u64,
    /// CPU of the target's processes over the counted window, per answered request.
    cpu_us_per_request: Option<f64>,
}

/// Closed loop: `connections` connections, each sending its next request as soon as the last
/// one answered, for [`WARM_UP`] then `seconds`, counting answers in the second window.
async fn max_throughput(target: &Target, connections: usize, seconds: Duration) -> Throughput {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + WARM_UP;
    let end = start + seconds;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (target, ok, errors) = (target.clone(), ok.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(&target).await;
            loop {
                let answered = call(&mut sender, &target).await;
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if now >= start {
                    if answered { &ok } else { &errors }.fetch_add(1, Ordering::Relaxed);
                }
                if !answered {
                    sender = connect(&target).await;
                }
            }
        }));
    }
    // The target's CPU over exactly the counted window.
    let pids = target.pids.clone();
    let cpu = tokio::spawn(async move {
        if pids.is_empty() {
            return None;
        }
        tokio::time::sleep_until(start.into()).await;
        let before = tree_ticks(&pids)?;
        tokio::time::sleep_until(end.into()).await;
        Some(tree_ticks(&pids)?.saturating_sub(before))
    });
    for task in tasks {
        task.await.expect("load task");
    }
    let answered = ok.load(Ordering::Relaxed);
    let ticks = cpu.await.expect("cpu task");
    Throughput {
        per_second: answered as f64 / seconds.as_secs_f64(),
        errors: errors.load(Ordering::Relaxed),
        cpu_us_per_request: ticks
            .filter(|_| answered > 0)
            .map(|ticks| ticks as f64 / clock_ticks() * 1e6 / answered as f64),
    }
}

struct Latency {
    offered: f64,
    achieved: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    errors: u64,
    /// Requests released in the window but unanswered (or not even sent) [`DRAIN`] after the
    /// last release.
    unanswered: u64,
}

impl Latency {
    /// The target kept up with the offered rate.
    fn kept_up(&self) -> bool {
        self.unanswered == 0 && self.achieved >= 0.97 * self.offered
    }
}

/// Open loop at `rate` requests per second: a pacing thread releases requests on schedule,
/// whatever the answers; each takes an idle connection from the pool (waiting if none is) and
/// its latency runs from its release to the end of its response.
async fn latency_at(target: &Target, rate: f64, seconds: Duration) -> Latency {
    let (pool_tx, mut pool_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..OPEN_LOOP_CONNECTIONS {
        pool_tx.send(connect(target).await).expect("pool");
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
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut dispatcher = {
        let (target, samples, errors, done) = (target.clone(), samples.clone(), errors.clone(), done.clone());
        tokio::spawn(async move {
            while let Some(stamp) = release_rx.recv().await {
                let counted = stamp >= start;
                let Some(mut sender) = pool_rx.recv().await else { break };
                let (target, samples, errors, pool_tx, done) =
                    (target.clone(), samples.clone(), errors.clone(), pool_tx.clone(), done.clone());
                tokio::spawn(async move {
                    let answered = call(&mut sender, &target).await;
                    let elapsed = stamp.elapsed();
                    if counted && !done.load(Ordering::Relaxed) {
                        if answered {
                            samples.lock().expect("samples").push(elapsed);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if !answered {
                        sender = connect(&target).await;
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
        let answered = samples.lock().expect("samples").len() as u64 + errors.load(Ordering::Relaxed);
        if answered >= released.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, Ordering::Relaxed);
    let mut samples = std::mem::take(&mut *samples.lock().expect("samples"));
    samples.sort_unstable();
    let errors = errors.load(Ordering::Relaxed);
    let released = released.load(Ordering::Relaxed);
    let quantile = |q: f64| -> Duration {
        if samples.is_empty() {
            return Duration::ZERO;
        }
        let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index]
    };
    Latency {
        offered: rate,
        achieved: samples.len() as f64 / seconds.as_secs_f64(),
        p50: quantile(0.50),
        p90: quantile(0.90),
        p99: quantile(0.99),
        max: samples.last().copied().unwrap_or_default(),
        errors,
        unanswered: released.saturating_sub(samples.len() as u64 + errors),
    }
}

// ---------------------------------------------------------------------------------------
// The run

fn authority(url: &str) -> String {
    let uri: http::Uri = url.parse().expect("a URL");
    uri.authority().expect("a URL with host:port").as_str().to_owned()
}

async fn token() -> String {
    if let Ok(token) = std::env::var("BENCH_TOKEN") {
        return token;
    }
    let http = std::env::var("BENCH_AUTH_HTTP").expect("BENCH_AUTH_HTTP or BENCH_TOKEN");
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let body = json!({"name": "Bench", "email": email, "password": "correct horse battery staple"});
    let signed_up: Value = reqwest::Client::new()
        .post(format!("{http}/api/v1/auth/signup"))
        .json(&body)
        .send()
        .await
        .expect("signup")
        .json()
        .await
        .expect("signup body");
    signed_up["access_token"].as_str().expect("access token").to_owned()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} × {cpu}")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

struct Measured {
    target: Target,
    throughput: Throughput,
    /// At half of the direct maximum, SPEC §10's offered load.
    latency: Latency,
    /// When it could not keep up with that: itself, then the upstream direct, at half of its
    /// own maximum, so the added latency is still measured at one rate.
    own_half: Option<(Latency, Latency)>,
}

async fn run(upstream: String) {
    let connections = env_number("BENCH_CONNECTIONS", 32) as usize;
    let seconds = Duration::from_secs(env_number("BENCH_SECONDS", 5));
    let token: Arc<str> = token().await.into();
    let target = |name: &str, url: &str, pids: Vec<u32>| Target {
        name: name.to_owned(),
        authority: authority(url),
        token: token.clone(),
        pids,
    };
    let pids = |text: &str| text.split(',').filter_map(|p| p.trim().parse().ok()).collect::<Vec<u32>>();
    let mut targets = vec![target("direct", &upstream, pids(&std::env::var("BENCH_UPSTREAM_PID").unwrap_or_default()))];
    // `name|url|pid,pid;…`: every proxy in front of the upstream, and the processes it costs.
    for entry in std::env::var("BENCH_TARGETS").unwrap_or_default().split(';').filter(|e| !e.trim().is_empty()) {
        let mut parts = entry.split('|');
        let (Some(name), Some(url)) = (parts.next(), parts.next()) else {
            panic!("BENCH_TARGETS entry `{entry}` is not name|url|pids");
        };
        targets.push(target(name.trim(), url.trim(), pids(parts.next().unwrap_or_default())));
    }
    // Every target must answer 200 before anything is measured.
    for target in &targets {
        let mut sender = connect(target).await;
        assert!(call(&mut sender, target).await, "{} did not answer 200 on {PATH}", target.name);
    }
    let load_before = load_average();
    println!(
        "gateway scenario: {}; {connections} connections closed loop, {} s (+{} s warm-up) per figure; load average {load_before}",
        machine(),
        seconds.as_secs(),
        WARM_UP.as_secs()
    );

    let mut throughputs = Vec::new();
    for target in &targets {
        let measured = max_throughput(target, connections, seconds).await;
        let cpu = measured.cpu_us_per_request.map_or_else(|| "—".to_owned(), |us| format!("{us:.1} µs CPU/request"));
        println!(
            "  max throughput  {:<24} {:>9.0} /s  {cpu}  ({} errors)",
            target.name, measured.per_second, measured.errors
        );
        throughputs.push(measured);
    }
    let rate = throughputs[0].per_second / 2.0;
    println!("  fixed rate: {rate:.0} /s (half of the direct maximum), {OPEN_LOOP_CONNECTIONS} connections open loop");
    let direct = targets[0].clone();
    let mut results = Vec::new();
    for (target, throughput) in targets.into_iter().zip(throughputs) {
        let latency = latency_at(&target, rate, seconds).await;
        print_latency(&target.name, "", &latency);
        let own_half = if latency.kept_up() {
            None
        } else {
            let own_rate = throughput.per_second / 2.0;
            let own = latency_at(&target, own_rate, seconds).await;
            print_latency(&target.name, " (half its own max)", &own);
            let base = latency_at(&direct, own_rate, seconds).await;
            print_latency(&direct.name, " (same rate)", &base);
            Some((own, base))
        };
        results.push(Measured { target, throughput, latency, own_half });
    }
    let load_after = load_average();
    let (json, markdown) = summarise(&results, connections, seconds, rate, &load_before, &load_after);
    println!("\n{markdown}");
    if let Ok(path) = std::env::var("BENCH_SUMMARY") {
        std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write summary");
        let md_path = std::path::Path::new(&path).with_extension("md");
        std::fs::write(&md_path, &markdown).expect("write summary");
        println!("summary: {path}, {}", md_path.display());
    }
}

fn print_latency(name: &str, note: &str, l: &Latency) {
    println!(
        "  latency         {:<20} offered {:>7.0}/s answered {:>7.0}/s  p50 {:>8.0} µs  p90 {:>8.0} µs  p99 {:>8.0} µs  max {:>8.0} µs  ({} errors, {} unanswered){note}{}",
        name,
        l.offered,
        l.achieved,
        micros(l.p50),
        micros(l.p90),
        micros(l.p99),
        micros(l.max),
        l.errors,
        l.unanswered,
        if l.kept_up() { "" } else { "  DID NOT KEEP UP" }
    );
}

fn latency_json(l: &Latency) -> Value {
    json!({
        "offered_per_second": l.offered.round(),
        "answered_per_second": l.achieved.round(),
        "kept_up": l.kept_up(),
        "p50_us": micros(l.p50).round(),
        "p90_us": micros(l.p90).round(),
        "p99_us": micros(l.p99).round(),
        "max_us": micros(l.max).round(),
        "errors": l.errors,
        "unanswered": l.unanswered,
    })
}

/// `p50 | p99 | added p50 | added p99` cells for `l` against `base` at the same rate.
fn latency_cells(l: &Latency, base: &Latency) -> String {
    if !l.kept_up() {
        return format!("overloaded: {:.0} of {:.0} /s answered | — | — | —", l.achieved, l.offered);
    }
    format!(
        "{:.0} µs | {:.0} µs | {:+.0} µs | {:+.0} µs",
        micros(l.p50),
        micros(l.p99),
        micros(l.p50) - micros(base.p50),
        micros(l.p99) - micros(base.p99)
    )
}

/// The JSON summary and a Markdown table to paste into `docs/benchmarks.md`.
fn summarise(
    results: &[Measured],
    connections: usize,
    seconds: Duration,
    rate: f64,
    load_before: &str,
    load_after: &str,
) -> (Value, String) {
    let direct = &results[0];
    let mut md = format!(
        "Machine: {}; load average {load_before} before, {load_after} after.\n\
         Max throughput: {connections} keep-alive HTTP/1.1 connections, closed loop, {secs} s after a 1 s warm-up.\n\
         Latency: open loop over {OPEN_LOOP_CONNECTIONS} connections, {secs} s after a 1 s warm-up, at {rate:.0} /s \
         (half the direct maximum) and, for a target that cannot keep up with that, at half its own maximum \
         (the upstream direct measured again at that rate for the added figures).\n\n\
         CPU: user + system time of the target's processes and their descendants (`/proc/<pid>/stat`) over \
         the counted throughput window, divided by the requests answered.\n\n\
         | target | max throughput | vs direct | CPU per request | offered rate | p50 | p99 | added p50 | added p99 |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        machine(),
        secs = seconds.as_secs(),
    );
    let mut rows = Vec::new();
    for m in results {
        let ratio = m.throughput.per_second / direct.throughput.per_second;
        let cpu = m.throughput.cpu_us_per_request.map_or_else(|| "—".to_owned(), |us| format!("{us:.1} µs"));
        md.push_str(&format!(
            "| {} | {:.0} /s | {:.0} % | {cpu} | {:.0} /s | {} |\n",
            m.target.name,
            m.throughput.per_second,
            ratio * 100.0,
            m.latency.offered,
            latency_cells(&m.latency, &direct.latency)
        ));
        if let Some((own, base)) = &m.own_half {
            md.push_str(&format!(
                "| {} (half its own max) | | | | {:.0} /s | {} |\n| direct at the same rate | | | | {:.0} /s | {} |\n",
                m.target.name,
                own.offered,
                latency_cells(own, base),
                base.offered,
                latency_cells(base, base)
            ));
        }
        rows.push(json!({
            "target": m.target.name,
            "max_throughput_per_second": m.throughput.per_second.round(),
            "max_throughput_errors": m.throughput.errors,
            "cpu_us_per_request": m.throughput.cpu_us_per_request.map(|us| (us * 10.0).round() / 10.0),
            "throughput_vs_direct": (ratio * 1000.0).round() / 1000.0,
            "latency_at_half_direct_max": latency_json(&m.latency),
            "added_p50_us": m.latency.kept_up().then(|| (micros(m.latency.p50) - micros(direct.latency.p50)).round()),
            "added_p99_us": m.latency.kept_up().then(|| (micros(m.latency.p99) - micros(direct.latency.p99)).round()),
            "latency_at_half_own_max": m.own_half.as_ref().map(|(own, base)| json!({
                "target": latency_json(own),
                "direct_at_same_rate": latency_json(base),
                "added_p50_us": (micros(own.p50) - micros(base.p50)).round(),
                "added_p99_us": (micros(own.p99) - micros(base.p99)).round(),
            })),
        }));
    }
    let value = json!({
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "connections_closed_loop": connections,
        "connections_open_loop": OPEN_LOOP_CONNECTIONS,
        "seconds_per_figure": seconds.as_secs(),
        "fixed_rate_per_second": rate.round(),
        "targets": rows,
    });
    (value, md)
}
