//! The internal contract's speed (SPEC §10): contract-client cache lookups per second, and
//! `Validate` throughput over gRPC without any client cache, one credential per call and
//! 100 per `ValidateBatch`. A real auth service (embedded SQLite, warm in-memory state) runs
//! in another process when `BENCH_AUTH_HTTP` and `BENCH_AUTH_GRPC` name it (`cargo xtask bench`
//! starts one), otherwise in this process, where client and server share the cores.

// A benchmark harness: a failed set-up step is a broken benchmark, so it panics.
#![allow(clippy::expect_used)]

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use auth_contract::{
    AuthClient, ClientConfig,
    proto::{ValidateBatchRequest, ValidateRequest, auth_internal_client::AuthInternalClient},
};
use auth_service::{AuthConfig, AuthService, Backends, Mode, service::ClientMeta};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use platform::{clock::SystemClock, env::MapEnv};
use secrecy::SecretString;
use tonic::{Request, transport::Channel};

const SERVICE_SECRET: &str = "bench-service-secret-0123456789abcdef0123";
/// Requests in flight at once for the throughput runs.
const IN_FLIGHT: usize = 64;
const BATCH: usize = 100;

struct Fixture {
    _dir: Option<tempfile::TempDir>,
    grpc_url: String,
    access_token: String,
    service_token: String,
}

async fn start() -> Fixture {
    match (std::env::var("BENCH_AUTH_HTTP"), std::env::var("BENCH_AUTH_GRPC")) {
        (Ok(http), Ok(grpc)) => external(http, grpc).await,
        _ => in_process().await,
    }
}

/// A server in this process: client and server share the cores.
async fn in_process() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = MapEnv::new([
        ("DATA_DIR", dir.path().to_string_lossy().to_string()),
        ("JWT_SECRET", "bench-jwt-secret-0123456789abcdef0123456789".to_owned()),
        ("SERVICE_SECRET", SERVICE_SECRET.to_owned()),
        ("CONTEXT_SIGNING_SECRET", "bench-context-secret-0123456789abcdef01234".to_owned()),
        ("JWT_EXPIRES_IN", "1h".to_owned()),
    ]);
    let config = AuthConfig::from_env(&env, Mode::Embedded).expect("config");
    let backends = Backends::connect(&config).await.expect("backends");
    let service = AuthService::new(config, backends.deps(Arc::new(SystemClock))).expect("service");
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = auth_service::app::bind(loopback, loopback).await.expect("bind");
    let grpc_url = format!("http://{}", listeners.grpc.local_addr().expect("addr"));
    tokio::spawn(auth_service::run(service.clone(), listeners, std::future::pending()));
    let meta = ClientMeta { ip: [127, 0, 0, 1].into(), user_agent: None };
    let signed_in =
        service.signup("Bench", "bench@example.com", "correct horse battery staple", &meta).await.expect("signup");
    let (service_token, _) = service.issue_service_token("bench", SERVICE_SECRET).await.expect("service token");
    Fixture { _dir: Some(dir), grpc_url, access_token: signed_in.tokens.access_token, service_token }
}

/// A server in another process (`cargo xtask bench` starts one), as SPEC §10 prescribes: the
/// user signs up over HTTP, the service token comes from `IssueServiceToken`.
async fn external(http: String, grpc_url: String) -> Fixture {
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let body = serde_json::json!({"name": "Bench", "email": email, "password": "correct horse battery staple"});
    let signed_up: serde_json::Value = reqwest::Client::new()
        .post(format!("{http}/api/v1/auth/signup"))
        .json(&body)
        .send()
        .await
        .expect("signup")
        .json()
        .await
        .expect("signup body");
    let access_token = signed_up["access_token"].as_str().expect("access token").to_owned();
    let secret = std::env::var("BENCH_SERVICE_SECRET").unwrap_or_else(|_| SERVICE_SECRET.to_owned());
    let mut grpc = AuthInternalClient::connect(grpc_url.clone()).await.expect("grpc");
    let issued = grpc
        .issue_service_token(auth_contract::proto::IssueServiceTokenRequest {
            service_name: "bench".into(),
            service_secret: secret,
        })
        .await
        .expect("service token")
        .into_inner();
    Fixture { _dir: None, grpc_url, access_token, service_token: issued.token }
}

fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
    request
}

fn validate_request(token: &str) -> ValidateRequest {
    ValidateRequest { credential: token.to_owned(), ip: String::new(), origin: String::new() }
}

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
    group.finish();

    let channels: Vec<Channel> = runtime.block_on(async {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(Channel::from_shared(fixture.grpc_url.clone()).expect("uri").connect().await.expect("connect"));
        }
        out
    });
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
criterion_main!(benches);
