//! The gateway benchmark of SPEC §10 (issue 12's judging method): one upstream measured
//! direct, through the gateway (standalone in distributed mode, the judged row; with a tenant
//! rate limit in Redis; the all-in-one binary), through a bare hyper forwarder (the limit) and
//! through the peers (nginx `proxy_pass`, HAProxy, Caddy `reverse_proxy` with no
//! authentication; Caddy `forward_auth` in front of the auth service). `cargo xtask bench
//! gateway` starts every server in a process of its own and runs this binary with
//! `BENCH_PLAN`, a JSON file naming the targets:
//!
//! ```json
//! {"layout": "…", "targets": [{"name": "direct", "url": "http://127.0.0.1:9000",
//!   "path": "/v1/user/bench/item", "auth_http": "http://127.0.0.1:4001", "pids": [123],
//!   "role": "direct", "group": "main"}, …]}
//! ```
//!
//! `pids` are the processes (with their descendants) whose CPU a target costs; `auth_http` the
//! auth service a user signs up on for the target's Bearer token; `role` marks the rows the
//! ratios are taken between (`direct`, `judged`, `nginx`, `forwarder`); `group` is `main`, or
//! `busy` for the upstream spinning CPU per request (throughput only, against its own direct).
//!
//! Every request is GET or POST with a 1 KiB body in turn, and counts only if answered 200
//! with exactly `ok\n`; anything else fails the round, and the run exits non-zero. In each of
//! `BENCH_ROUNDS` rounds (default 3), every target in plan order: (1) the maximum throughput,
//! a closed loop of `BENCH_CONNECTIONS` (32) keep-alive connections for `BENCH_SECONDS` (5)
//! after a one-second warm-up, with the CPU of its processes over that window; then, for the
//! `main` group, (2) latency in an open loop at `BENCH_RATE` (5 000) requests/s, the added
//! latency being the target's minus the upstream direct's in the same round. Figures are
//! medians over the rounds; the per-round values are in the summary. `BENCH_SUMMARY` names
//! the JSON summary; a Markdown table and an SVG chart are written beside it.
//!
//! Other modes of the same binary:
//! - `BENCH_CHECK_ONLY=1` (with `BENCH_PLAN`): every target answers a GET and a POST, and
//!   nothing is measured (`cargo xtask bench --quick`);
//! - `BENCH_CALLGRIND_REQUESTS=N` (with `BENCH_PLAN`, targets running under callgrind with
//!   instrumentation off, `callgrind_out` naming the output file): warm up, switch
//!   instrumentation on, send exactly N requests, dump, report instructions per request (the
//!   dumps are kept beside the summary as `bench-gateway-callgrind.<role>.out`);
//! - `BENCH_SERVE_UPSTREAM=<port>`: the upstream (see [`serve`]), with `BENCH_VERIFY_PORT`
//!   and `BENCH_CONTEXT_SECRET` for its verifying port and `BENCH_UPSTREAM_SPIN_US` for CPU
//!   burnt per request;
//! - `BENCH_SERVE_FORWARDER=<port>` with `BENCH_FORWARD_TO=<port>`: the bare forwarder.
//!
//! Without any of these it does nothing, so `cargo bench --workspace` passes through it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod load;
mod report;
mod serve;
#[path = "../support/mod.rs"]
mod support;

use std::{collections::HashMap, path::Path, process::ExitCode, time::Duration};

use http::HeaderValue;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    load::Target,
    support::{Failures, WARM_UP, load_average, machine, micros},
};

/// The gateway binaries use mimalloc; the forwarder is judged with the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the upstream answers, and the only answer a counted request may get.
pub const EXPECTED_BODY: &[u8] = b"ok\n";
/// The size of every POST body.
pub const POST_BODY_LEN: usize = 1024;

#[derive(Deserialize)]
struct Plan {
    #[serde(default)]
    layout: String,
    targets: Vec<PlannedTarget>,
}

#[derive(Deserialize, Clone)]
struct PlannedTarget {
    name: String,
    url: String,
    path: String,
    auth_http: String,
    #[serde(default)]
    pids: Vec<u32>,
    #[serde(default)]
    role: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    callgrind_out: Option<String>,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> ExitCode {
    if let Ok(port) = std::env::var("BENCH_SERVE_UPSTREAM") {
        let verifying = std::env::var("BENCH_VERIFY_PORT").ok().map(|port| {
            let secret = std::env::var("BENCH_CONTEXT_SECRET").expect("BENCH_CONTEXT_SECRET with BENCH_VERIFY_PORT");
            (port.parse().expect("BENCH_VERIFY_PORT is a port"), secret)
        });
        let spin = Duration::from_micros(env_number("BENCH_UPSTREAM_SPIN_US", 0));
        serve::upstream(port.parse().expect("BENCH_SERVE_UPSTREAM is a port"), verifying, spin);
        return ExitCode::SUCCESS;
    }
    if let Ok(port) = std::env::var("BENCH_SERVE_FORWARDER") {
        let to = std::env::var("BENCH_FORWARD_TO").expect("BENCH_FORWARD_TO with BENCH_SERVE_FORWARDER");
        serve::forwarder(port.parse().expect("BENCH_SERVE_FORWARDER is a port"), to.parse().expect("a port"));
        return ExitCode::SUCCESS;
    }
    let Ok(plan) = std::env::var("BENCH_PLAN") else {
        eprintln!("proxy bench: BENCH_PLAN not set; run it with `cargo xtask bench gateway`");
        return ExitCode::SUCCESS;
    };
    let plan: Plan = serde_json::from_slice(&std::fs::read(&plan).expect("read BENCH_PLAN")).expect("BENCH_PLAN");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let result = runtime.block_on(async move {
        let targets = targets(&plan).await?;
        if std::env::var("BENCH_CHECK_ONLY").is_ok() {
            check(&targets).await
        } else if let Ok(requests) = std::env::var("BENCH_CALLGRIND_REQUESTS") {
            callgrind(&plan, &targets, requests.parse().map_err(|_| "BENCH_CALLGRIND_REQUESTS is a number")?).await
        } else {
            measure(&plan, targets).await
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("proxy bench: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The plan's targets, each with a Bearer token of a user signed up on its auth service.
async fn targets(plan: &Plan) -> Result<Vec<(PlannedTarget, Target)>, String> {
    let mut tokens: HashMap<String, HeaderValue> = HashMap::new();
    let mut targets = Vec::new();
    let post_body = load::post_body();
    for planned in &plan.targets {
        let authorization = match tokens.get(&planned.auth_http) {
            Some(token) => token.clone(),
            None => {
                let token = sign_up(&planned.auth_http).await?;
                let value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|e| e.to_string())?;
                tokens.insert(planned.auth_http.clone(), value.clone());
                value
            }
        };
        let uri: http::Uri = planned.url.parse().map_err(|e| format!("{}: {e}", planned.url))?;
        let authority = uri.authority().ok_or_else(|| format!("{} has no host:port", planned.url))?.to_string();
        let target = Target {
            name: planned.name.clone(),
            authority,
            path: planned.path.clone(),
            authorization,
            pids: planned.pids.clone(),
            post_body: post_body.clone(),
        };
        targets.push((planned.clone(), target));
    }
    Ok(targets)
}

async fn sign_up(http: &str) -> Result<String, String> {
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let body = json!({"name": "Bench", "email": email, "password": "correct horse battery staple"});
    let answer = reqwest::Client::new()
        .post(format!("{http}/api/v1/auth/signup"))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("signup on {http}: {e}"))?;
    let signed_up: Value = answer.json().await.map_err(|e| format!("signup on {http}: {e}"))?;
    signed_up["access_token"].as_str().map(str::to_owned).ok_or_else(|| format!("signup on {http}: {signed_up}"))
}

/// Every target answers a GET and a POST as the upstream would.
async fn check(targets: &[(PlannedTarget, Target)]) -> Result<(), String> {
    let mut failed = Vec::new();
    for (_, target) in targets {
        match load::probe(target).await {
            Ok(()) => println!("bench --quick: {} answers GET and POST with the upstream's 200 ok", target.name),
            Err(e) => {
                println!("bench --quick: {} FAILED: {e}", target.name);
                failed.push(target.name.clone());
            }
        }
    }
    if failed.is_empty() { Ok(()) } else { Err(format!("not answering as expected: {}", failed.join(", "))) }
}

/// Runs `callgrind_control <args> <pid>`. It answers 0 even when it could not reach the
/// process, so its output is read: valgrind's FIFOs are named after `$HOST`, which must be
/// the one the process under callgrind had (xtask gives both the same).
fn callgrind_control(args: &[&str], pid: u32) -> Result<(), String> {
    let output = std::process::Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() && said.contains("OK") && !said.contains("error") && !said.contains("Error") {
        Ok(())
    } else {
        Err(format!("callgrind_control {} {pid} failed: {}", args.join(" "), said.trim()))
    }
}

/// The total instructions (`Ir`) in the newest callgrind dump whose name starts with `out`,
/// and that dump.
fn dumped_instructions(out: &str) -> Result<(u64, std::path::PathBuf), String> {
    let out = Path::new(out);
    let dir = out.parent().ok_or("callgrind_out has no directory")?;
    let stem = out.file_name().ok_or("callgrind_out has no file name")?.to_string_lossy().into_owned();
    let newest = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&stem))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .ok_or_else(|| format!("no callgrind dump named {stem}* in {}", dir.display()))?;
    let text = std::fs::read_to_string(newest.path()).map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|line| line.strip_prefix("totals:").or_else(|| line.strip_prefix("summary:")))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .map(|total| (total, newest.path()))
        .ok_or_else(|| format!("{}: no totals line", newest.path().display()))
}

/// Instructions per request of each target running under callgrind.
async fn callgrind(plan: &Plan, targets: &[(PlannedTarget, Target)], requests: u64) -> Result<(), String> {
    let mut rows = Vec::new();
    for (planned, target) in targets {
        let pid = *target.pids.first().ok_or_else(|| format!("{}: no pid", target.name))?;
        let out = planned.callgrind_out.as_deref().ok_or_else(|| format!("{}: no callgrind_out", target.name))?;
        // Uninstrumented warm-up (credential cached, pools filled), then a short instrumented
        // one so the counted requests find callgrind's caches warm too.
        load::send(target, 2_000, 8).await?;
        callgrind_control(&["--instr=on"], pid)?;
        load::send(target, 200, 8).await?;
        callgrind_control(&["--zero"], pid)?;
        load::send(target, requests, 8).await?;
        callgrind_control(&["--dump"], pid)?;
        callgrind_control(&["--instr=off"], pid)?;
        let (instructions, dump) = dumped_instructions(out)?;
        // Kept beside the summary for `callgrind_annotate` once the scenario's files are gone.
        if let Ok(summary) = std::env::var("BENCH_SUMMARY") {
            let kept = Path::new(&summary).with_file_name(format!("bench-gateway-callgrind.{}.out", planned.role));
            std::fs::copy(&dump, &kept).map_err(|e| format!("{}: {e}", kept.display()))?;
            println!("  callgrind  {} dump kept as {}", target.name, kept.display());
        }
        let per_request = instructions as f64 / requests as f64;
        println!(
            "  callgrind  {:<32} {:>12.0} instructions per request ({instructions} over {requests})",
            target.name, per_request
        );
        rows.push(json!({"target": target.name, "requests": requests, "instructions": instructions,
            "instructions_per_request": per_request.round()}));
    }
    let per_request = |role: &str| {
        targets
            .iter()
            .zip(&rows)
            .find(|((planned, _), _)| planned.role == role)
            .and_then(|(_, row)| row["instructions_per_request"].as_f64())
    };
    let ratio = per_request("judged").zip(per_request("forwarder")).map(|(gateway, bare)| gateway / bare);
    if let Some(ratio) = ratio {
        println!("  gateway instructions per request ÷ bare forwarder's: {ratio:.2}");
    }
    let summary = json!({"layout": plan.layout, "machine": machine(), "callgrind": rows,
        "gateway_vs_forwarder": ratio.map(|r| (r * 1000.0).round() / 1000.0)});
    if let Ok(path) = std::env::var("BENCH_SUMMARY") {
        std::fs::write(&path, serde_json::to_string_pretty(&summary).expect("json")).map_err(|e| e.to_string())?;
        println!("summary: {path}");
    }
    Ok(())
}

/// The rounds, then the summary.
async fn measure(plan: &Plan, targets: Vec<(PlannedTarget, Target)>) -> Result<(), String> {
    let rounds = env_number("BENCH_ROUNDS", 3).max(1) as usize;
    let connections = env_number("BENCH_CONNECTIONS", 32) as usize;
    let seconds = Duration::from_secs(env_number("BENCH_SECONDS", 5).max(1));
    let rate = env_number("BENCH_RATE", 5_000).max(1) as f64;
    // Every target must answer as expected before anything is measured.
    for (_, target) in &targets {
        load::probe(target).await.map_err(|e| format!("{} does not answer as expected: {e}", target.name))?;
    }
    let settings = report::Settings {
        layout: plan.layout.clone(),
        rounds,
        connections,
        seconds,
        rate,
        load_before: load_average(),
    };
    println!(
        "gateway scenario: {}; {}; {rounds} rounds; {connections} connections closed loop, {} s (+{} s warm-up) per figure, open loop at {rate:.0} /s; load average {}",
        machine(),
        plan.layout,
        seconds.as_secs(),
        WARM_UP.as_secs(),
        settings.load_before
    );
    let mut rows: Vec<report::Row> = targets
        .iter()
        .map(|(planned, target)| report::Row {
            name: target.name.clone(),
            role: planned.role.clone(),
            group: planned.group.clone(),
            rounds: Vec::new(),
        })
        .collect();
    let mut failures = Vec::new();
    for round in 1..=rounds {
        println!("round {round} of {rounds}");
        let mut figures = Vec::new();
        for (_, target) in &targets {
            let failed = Failures::default();
            let throughput = load::max_throughput(target, connections, seconds, &failed).await;
            let cpu =
                throughput.cpu_us_per_request.map_or_else(|| "—".to_owned(), |us| format!("{us:.1} µs CPU/request"));
            println!("  max throughput  {:<40} {:>9.0} /s  {cpu}", target.name, throughput.per_second);
            report_failures(&mut failures, round, &target.name, "max throughput", &failed);
            figures.push(report::RoundFigures {
                throughput: throughput.per_second,
                cpu_us: throughput.cpu_us_per_request,
                latency: None,
                failures: failed.count(),
            });
        }
        for ((planned, target), figure) in targets.iter().zip(&mut figures) {
            if planned.group != "main" {
                continue;
            }
            let failed = Failures::default();
            let latency = load::latency_at(target, rate, seconds, &failed).await;
            print_latency(&target.name, &latency);
            report_failures(&mut failures, round, &target.name, "latency", &failed);
            figure.failures += failed.count();
            figure.latency = Some(latency);
        }
        for (row, figure) in rows.iter_mut().zip(figures) {
            row.rounds.push(figure);
        }
    }
    let summary = report::Summary { settings, rows, failures, load_after: load_average() };
    let (json, markdown, svg) = (summary.json(), summary.markdown(), summary.svg());
    println!("\n{markdown}");
    if let Ok(path) = std::env::var("BENCH_SUMMARY") {
        let path = Path::new(&path);
        std::fs::write(path, serde_json::to_string_pretty(&json).expect("json")).map_err(|e| e.to_string())?;
        std::fs::write(path.with_extension("md"), &markdown).map_err(|e| e.to_string())?;
        std::fs::write(path.with_extension("svg"), &svg).map_err(|e| e.to_string())?;
        println!("summary: {} (and .md, .svg beside it)", path.display());
    }
    if summary.failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} figure(s) had failed requests: the run FAILED", summary.failures.len()))
    }
}

/// Prints and keeps the failures of one figure, loudly.
fn report_failures(all: &mut Vec<report::Failed>, round: usize, target: &str, figure: &str, failed: &Failures) {
    let count = failed.count();
    if count == 0 {
        return;
    }
    let messages = failed.messages();
    println!(
        "  FAILED round {round}: {target}, {figure}: {count} request(s) not answered 200 ok; first: {}",
        messages.join(" | ")
    );
    all.push(report::Failed { round, target: target.to_owned(), figure: figure.to_owned(), count, messages });
}

fn print_latency(name: &str, l: &load::Latency) {
    println!(
        "  latency         {:<40} offered {:>6.0}/s answered {:>6.0}/s  p50 {:>7.0} µs  p90 {:>7.0} µs  p99 {:>7.0} µs  max {:>7.0} µs  ({} unanswered){}",
        name,
        l.offered,
        l.achieved,
        micros(l.p50),
        micros(l.p90),
        micros(l.p99),
        micros(l.max),
        l.unanswered,
        if l.kept_up() { "" } else { "  DID NOT KEEP UP" }
    );
}
