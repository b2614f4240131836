//! The webhook ingestion benchmark (SPEC §10: signed events accepted per second, durable
//! before the 202, with the p99 to the 202, on each backend). `cargo xtask bench webhooks`
//! starts, per backend, a gateway with two Meta-profile sources, `fast` (its upstream this
//! binary's fast upstream, [`sink`]) and `down` (its upstream a closed port), and runs this
//! binary with `BENCH_PLAN`, a JSON file naming them:
//!
//! ```json
//! {"backend": "redis", "binary": "gateway", "targets": [{"upstream": "fast",
//!   "url": "http://127.0.0.1:8080", "path": "/v1/webhooks/fast", "secret": "…",
//!   "pids": [123], "store_pids": [45], "upstream_url": "http://127.0.0.1:9000"}, …]}
//! ```
//!
//! `pids` are the gateway's processes, `store_pids` the store's (their CPU is reported apart),
//! `upstream_url` the fast upstream whose count of deliveries is read (absent for `down`).
//!
//! For each target in turn: `BENCH_CONNECTIONS` (32) keep-alive connections post signed
//! events ([`event`]: WhatsApp-like, 1 KiB, unique ids, 50 conversations) in a closed loop
//! for a one-second warm-up and `BENCH_SECONDS` (5) counted ([`load`]); reported: accepted
//! events per second, p50/p99 to the 202, the gateway's (and the store's) CPU per accepted
//! event, 503s, other answers, and with the upstream fast how many events were delivered
//! during the run and when the last was. A fast target's backlog is delivered before the next
//! target starts. The rows are added to the summary `BENCH_SUMMARY` names ([`report`]), with
//! a Markdown table and an SVG chart beside it. An answer other than 202 or 503, or a broken
//! connection, fails the run.
//!
//! Other modes of the same binary:
//! - `BENCH_CHECK_ONLY=<n>` (with `BENCH_PLAN`): `n` events to each target, one at a time,
//!   each must be accepted, and with the upstream fast all must be delivered; nothing is
//!   measured (`cargo xtask bench --quick`);
//! - `BENCH_SERVE_WEBHOOK_UPSTREAM=<port>`: the fast upstream ([`sink`]).
//!
//! Without any of these it does nothing, so `cargo bench --workspace` passes through it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod event;
mod load;
mod report;
mod sink;
#[path = "../support/mod.rs"]
mod support;

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use serde::Deserialize;
use serde_json::json;

use crate::{
    event::{BODY_LEN, CONVERSATIONS, Events},
    load::{Answer, Target},
    support::{Failures, WARM_UP, connect, load_average, micros},
};

#[derive(Deserialize)]
struct Plan {
    backend: String,
    /// Which server binary runs the gateway.
    binary: String,
    targets: Vec<PlannedTarget>,
}

#[derive(Deserialize)]
struct PlannedTarget {
    /// `fast` or `down`.
    upstream: String,
    url: String,
    path: String,
    /// The source's Meta app secret.
    secret: String,
    #[serde(default)]
    pids: Vec<u32>,
    #[serde(default)]
    store_pids: Vec<u32>,
    #[serde(default)]
    upstream_url: Option<String>,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> ExitCode {
    if let Ok(port) = std::env::var("BENCH_SERVE_WEBHOOK_UPSTREAM") {
        sink::upstream(port.parse().expect("BENCH_SERVE_WEBHOOK_UPSTREAM is a port"));
        return ExitCode::SUCCESS;
    }
    let Ok(plan) = std::env::var("BENCH_PLAN") else {
        eprintln!("webhooks bench: BENCH_PLAN not set; run it with `cargo xtask bench webhooks`");
        return ExitCode::SUCCESS;
    };
    let plan: Plan = serde_json::from_slice(&std::fs::read(&plan).expect("read BENCH_PLAN")).expect("BENCH_PLAN");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let result = runtime.block_on(async move {
        let targets = targets(&plan)?;
        match std::env::var("BENCH_CHECK_ONLY") {
            Ok(events) => check(&targets, events.parse().map_err(|_| "BENCH_CHECK_ONLY is a number")?).await,
            Err(_) => measure(&plan, &targets).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("webhooks bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn targets(plan: &Plan) -> Result<Vec<(String, Arc<Target>)>, String> {
    plan.targets
        .iter()
        .map(|planned| {
            let uri: http::Uri = planned.url.parse().map_err(|e| format!("{}: {e}", planned.url))?;
            let authority = uri.authority().ok_or_else(|| format!("{} has no host:port", planned.url))?.to_string();
            let target = Target {
                name: format!("{}, upstream {}", plan.backend, planned.upstream),
                authority,
                path: planned.path.clone(),
                events: Events::new(&planned.secret),
                pids: planned.pids.clone(),
                store_pids: planned.store_pids.clone(),
                upstream: planned.upstream_url.clone(),
            };
            Ok((planned.upstream.clone(), Arc::new(target)))
        })
        .collect()
}

/// `events` events to each target, one after another's 202; with the upstream fast, every one
/// delivered within the drain limit.
async fn check(targets: &[(String, Arc<Target>)], events: u64) -> Result<(), String> {
    for (_, target) in targets {
        let before = match &target.upstream {
            Some(base) => Some(sink::delivered(base).await?),
            None => None,
        };
        let mut sender = connect(&target.authority).await?;
        for n in 0..events {
            match load::post(&mut sender, target, n).await? {
                Answer::Accepted => {}
                Answer::Unavailable => return Err(format!("{}: event {n} answered 503", target.name)),
                Answer::Other(what) => return Err(format!("{}: event {n} {what}", target.name)),
            }
        }
        let delivered = match (&target.upstream, before) {
            (Some(base), Some(before)) => {
                let failures = Failures::default();
                let drained = load::drain(base, before + events, std::time::Instant::now(), &failures).await;
                if drained.is_none() {
                    return Err(format!(
                        "{}: not every accepted event reached the upstream {}",
                        target.name,
                        failures.messages().join(" | ")
                    ));
                }
                " and delivered"
            }
            _ => "",
        };
        println!("bench --quick: webhooks ({}): {events} signed events accepted{delivered}", target.name);
    }
    Ok(())
}

/// Each target in plan order, its rows added to the summary.
async fn measure(plan: &Plan, targets: &[(String, Arc<Target>)]) -> Result<(), String> {
    let connections = env_number("BENCH_CONNECTIONS", 32).max(1) as usize;
    let seconds = Duration::from_secs(env_number("BENCH_SECONDS", 5).max(1));
    let settings = json!({
        "connections": connections,
        "seconds": seconds.as_secs(),
        "warm_up_seconds": WARM_UP.as_secs(),
        "events": format!(
            "Meta profile (`X-Hub-Signature-256`), WhatsApp-like JSON of {BODY_LEN} bytes, unique ids, \
             {CONVERSATIONS} conversations (Meta's default ordering key)"
        ),
        "load_average_before": load_average(),
    });
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (upstream, target) in targets {
        let failures = Failures::default();
        let run = load::closed_loop(target, connections, seconds, &failures).await;
        let (p50, p99, _) = load::quantiles(&run);
        let figure = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |us| format!("{us:.1}"));
        println!(
            "  {:<36} {:>7.0} accepted/s  p50 {:>6.2} ms  p99 {:>6.2} ms  gateway {} µs/event  store {} µs/event  \
             503s {}  failed {}{}",
            target.name,
            run.accepted as f64 / seconds.as_secs_f64(),
            micros(p50) / 1000.0,
            micros(p99) / 1000.0,
            figure(run.gateway_cpu_us),
            figure(run.store_cpu_us),
            run.unavailable,
            failures.count(),
            run.delivered_during.map_or_else(String::new, |d| format!(
                "  delivered {d} of {} during the run, all {} s after",
                run.accepted_total,
                run.drained_after.map_or_else(|| "NOT".to_owned(), |s| format!("{s:.1}"))
            )),
        );
        if failures.count() > 0 {
            println!(
                "  FAILED: {}: {} failure(s); first: {}",
                target.name,
                failures.count(),
                failures.messages().join(" | ")
            );
            failed.push(target.name.clone());
        }
        if run.accepted == 0 {
            failed.push(format!("{} (nothing accepted)", target.name));
        }
        rows.push(report::row(&plan.backend, &plan.binary, upstream, seconds, &run, &failures));
    }
    if let Ok(path) = std::env::var("BENCH_SUMMARY") {
        let markdown = report::add_rows(Path::new(&path), settings, rows)?;
        println!("\n{markdown}\nsummary: {path} (and .md, .svg beside it)");
    }
    if failed.is_empty() { Ok(()) } else { Err(format!("FAILED: {}", failed.join(", "))) }
}
