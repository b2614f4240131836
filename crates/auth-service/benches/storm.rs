//! Token validation during a login storm (SPEC §10: its p99 at most twice the idle p99).
//! Argon2id runs on the blocking pool behind a semaphore, so logins queue there instead of
//! taking the async workers that validate tokens. This measures one `Validate` at a time over
//! gRPC, first idle, then while 16 clients log in as fast as the service answers, and prints
//! the p50 and p99 of each phase next to criterion's figures.

// A benchmark harness: a failed set-up step is a broken benchmark, so it panics.
#![allow(clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use auth_contract::proto::auth_internal_client::AuthInternalClient;
use criterion::{Criterion, criterion_group, criterion_main};
use support::{Fixture, PASSWORD, authed, start, validate_request};
use tonic::transport::Channel;

mod support;

const LOGIN_CLIENTS: usize = 16;
const SAMPLES: usize = 3000;

async fn validate_once(grpc: &mut AuthInternalClient<Channel>, fixture: &Fixture) -> Duration {
    let started = Instant::now();
    let answer = grpc
        .validate(authed(&fixture.service_token, validate_request(&fixture.access_token)))
        .await
        .expect("validate")
        .into_inner();
    assert!(answer.valid);
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn sample(grpc: &mut AuthInternalClient<Channel>, fixture: &Fixture) -> (Duration, Duration) {
    let mut latencies = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        latencies.push(validate_once(grpc, fixture).await);
    }
    latencies.sort_unstable();
    (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

/// Starts the storm as another account (each login opens a session, and the oldest beyond
/// the per-user maximum would otherwise be the one being validated); it stops when `stop`
/// is set. Counts completed logins.
async fn storm(fixture: &Fixture, stop: Arc<AtomicBool>, logins: Arc<AtomicU64>) {
    let http = reqwest::Client::new();
    let email = format!("storm-{}", fixture.email);
    let signup = serde_json::json!({"name": "Storm", "email": email, "password": PASSWORD});
    let created =
        http.post(format!("{}/api/v1/auth/signup", fixture.http_url)).json(&signup).send().await.expect("signup");
    assert!(created.status().is_success(), "storm account: {}", created.status());
    for _ in 0..LOGIN_CLIENTS {
        let (http, stop, logins) = (http.clone(), stop.clone(), logins.clone());
        let url = format!("{}/api/v1/auth/login", fixture.http_url);
        let body = serde_json::json!({"email": email, "password": PASSWORD});
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(response) = http.post(&url).json(&body).send().await
                    && response.status().is_success()
                {
                    logins.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

fn login_storm(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let fixture = runtime.block_on(start());
    let mut grpc = runtime.block_on(AuthInternalClient::connect(fixture.grpc_url.clone())).expect("connect");

    let mut group = c.benchmark_group("validate_latency");
    group.bench_function("idle", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += validate_once(&mut grpc, &fixture).await;
                }
                total
            })
        });
    });
    let (idle_p50, idle_p99) = runtime.block_on(sample(&mut grpc, &fixture));

    let stop = Arc::new(AtomicBool::new(false));
    let logins = Arc::new(AtomicU64::new(0));
    // The storm runs on a runtime of its own, so the measured client never waits behind the
    // login clients' tasks: what is measured is the auth service's answer time.
    let storm_runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("storm runtime");
    storm_runtime.block_on(storm(&fixture, stop.clone(), logins.clone()));
    // Let the storm fill the hashing queue before measuring.
    runtime.block_on(async { tokio::time::sleep(Duration::from_secs(1)).await });
    group.bench_function("during_login_storm", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += validate_once(&mut grpc, &fixture).await;
                }
                total
            })
        });
    });
    let started = Instant::now();
    let before = logins.load(Ordering::Relaxed);
    let (storm_p50, storm_p99) = runtime.block_on(sample(&mut grpc, &fixture));
    let rate = (logins.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    storm_runtime.shutdown_background();
    group.finish();

    println!(
        "\nvalidate p50/p99 idle: {idle_p50:?} / {idle_p99:?}; during a login storm ({LOGIN_CLIENTS} clients, {rate:.0} logins/s): \
         {storm_p50:?} / {storm_p99:?}; p99 ratio {:.2} (SPEC §10: at most 2)\n",
        storm_p99.as_secs_f64() / idle_p99.as_secs_f64()
    );
}

criterion_group!(benches, login_storm);
criterion_main!(benches);
