//! The internal contract's speed (SPEC §10): contract-client cache lookups per second, alone
//! and while revocation events are applied to the same cache, and `Validate` throughput over
//! gRPC without any client cache, one credential per call and 100 per `ValidateBatch`, beside a
//! bare tonic server answering `Validate` at once (`support/echo.rs`, the floor on this
//! machine). A real auth service (embedded SQLite, warm in-memory state) runs in another
//! process when `BENCH_AUTH_HTTP` and `BENCH_AUTH_GRPC` name it (`cargo xtask bench` starts
//! one), otherwise in this process, where client and server share the cores; the echo server
//! always runs in a process of its own.

// A benchmark harness: a failed set-up step is a broken benchmark, so it panics.
#![allow(clippy::expect_used)]

use std::{
    hint::black_box,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use auth_contract::{
    AuthClient, ClientConfig, Presented,
    proto::{ValidateBatchRequest, auth_internal_client::AuthInternalClient},
};
use criterion::{Criterion, Throughput, criterion_group};
use secrecy::SecretString;
use support::{SERVICE_SECRET, authed, start, validate_request};
use tonic::transport::Channel;

mod support;
/// Requests in flight at once for the throughput runs.
const IN_FLIGHT: usize = 64;
const BATCH: usize = 100;
/// Revocation events applied per second during `cache_hit_during_revocations`: each ends a
/// session other than the looked-up credential's, so every lookup still hits.
const REVOCATIONS_PER_SECOND: u64 = 1_000;

/// Runs `total` calls with `IN_FLIGHT` at a time over a few channels; returns the time taken.
async fn drive<F, Fut>(channels: &[Channel], total: u64, call: F) -> Duration
where
    F: Fn(AuthInternalClient<Channel>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let per_task = total.div_ceil(IN_FLIGHT as u64);
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let client = AuthInternalClient::new(channels[i % channels.len()].clone());
            let call = call.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    call(client.clone()).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    started.elapsed()
}

fn contract(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let fixture = runtime.block_on(start());
    // The client's channel is created inside the runtime it will run on.
    let _runtime_context = runtime.enter();

    // Cache hits: the cost a gateway pays per request for a credential it has seen.
    let client = AuthClient::new(ClientConfig::new(
        fixture.grpc_url.clone(),
        "bench",
        SecretString::from(SERVICE_SECRET.to_owned()),
    ))
    .expect("client");
    runtime.block_on(client.validate(&fixture.access_token, None, None)).expect("warm the cache");
    let mut group = c.benchmark_group("contract_client");
    group.throughput(Throughput::Elements(1));
    group.bench_function("cache_hit", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(client.validate(black_box(&fixture.access_token), None, None).await.expect("hit"));
                }
                started.elapsed()
            })
        });
    });
    // The same lookups while another thread applies revocation events to the same cache.
    let (stop, applied) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let revoker = {
        let (client, stop, applied) = (client.clone(), stop.clone(), applied.clone());
        std::thread::spawn(move || {
            let per_tick = REVOCATIONS_PER_SECOND / 100;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..per_tick {
                    let n = applied.fetch_add(1, Ordering::Relaxed);
                    let payload = format!(r#"{{"session_id":"other-session-{n}","user_id":"other-user-{n}"}}"#);
                    client.apply_event(auth_contract::events::SESSION_TERMINATED, &payload);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = Instant::now();
    group.bench_function("cache_hit_during_revocations", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let presented = Presented::Token(&fixture.access_token);
                let started = Instant::now();
                for _ in 0..iters {
                    // A miss would be a call to the auth service: it fails the run instead.
                    black_box(client.cached_allowed(black_box(presented), None, None).await.expect("still cached"));
                }
                started.elapsed()
            })
        });
    });
    stop.store(true, Ordering::Relaxed);
    revoker.join().expect("revoker");
    let rate = applied.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("contract_client/cache_hit_during_revocations: {rate:.0} revocation events applied per second");
    group.finish();

    let connect = |url: String| {
        runtime.block_on(async move {
            let mut out = Vec::new();
            for _ in 0..4 {
                out.push(Channel::from_shared(url.clone()).expect("uri").connect().await.expect("connect"));
            }
            out
        })
    };
    let channels: Vec<Channel> = connect(fixture.grpc_url.clone());
    let (_echo, echo_url) = support::echo::spawn();
    let echo_channels: Vec<Channel> = connect(echo_url);
    let mut group = c.benchmark_group("grpc_validate");
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    let token = fixture.access_token.clone();
    let service_token = fixture.service_token.clone();
    group.bench_function("unbatched", |b| {
        b.iter_custom(|iters| {
            let (token, service_token) = (token.clone(), service_token.clone());
            runtime.block_on(drive(&channels, iters, move |mut grpc| {
                let request = authed(&service_token, validate_request(&token));
                async move {
                    let answer = grpc.validate(request).await.expect("validate").into_inner();
                    assert!(answer.valid);
                }
            }))
        });
    });
    // The floor: the same calls to a tonic server that answers at once.
    group.bench_function("echo_unbatched", |b| {
        b.iter_custom(|iters| {
            let (token, service_token) = (token.clone(), service_token.clone());
            runtime.block_on(drive(&echo_channels, iters, move |mut grpc| {
                let request = authed(&service_token, validate_request(&token));
                async move {
                    let answer = grpc.validate(request).await.expect("echo").into_inner();
                    assert!(answer.valid);
                }
            }))
        });
    });
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_of_100", |b| {
        b.iter_custom(|iters| {
            let (token, service_token) = (token.clone(), service_token.clone());
            runtime.block_on(drive(&channels, iters, move |mut grpc| {
                let batch = ValidateBatchRequest { requests: vec![validate_request(&token); BATCH] };
                let request = authed(&service_token, batch);
                async move {
                    let answer = grpc.validate_batch(request).await.expect("batch").into_inner();
                    assert_eq!(answer.responses.len(), BATCH);
                }
            }))
        });
    });
    group.finish();
}

criterion_group!(benches, contract);

fn main() {
    if std::env::var_os(support::echo::SERVE_ECHO).is_some() {
        support::echo::serve();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
