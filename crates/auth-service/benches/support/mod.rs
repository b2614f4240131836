//! What the benchmarks share: an auth service to measure (in another process when
//! `BENCH_AUTH_HTTP` and `BENCH_AUTH_GRPC` name one, as `cargo xtask bench` arranges, else in
//! this process), a signed-up user and a service token.

#![allow(clippy::expect_used, dead_code)]

pub mod echo;

use std::sync::Arc;

use auth_contract::proto::{ValidateRequest, auth_internal_client::AuthInternalClient};
use auth_service::{AuthConfig, AuthService, Backends, ClientMeta, Mode};
use platform::{clock::SystemClock, env::MapEnv};
use tonic::Request;

pub const SERVICE_SECRET: &str = "bench-service-secret-0123456789abcdef0123";
/// The benchmark user's password.
pub const PASSWORD: &str = "correct horse battery staple";

pub struct Fixture {
    _dir: Option<tempfile::TempDir>,
    pub http_url: String,
    /// The benchmark user's email (password [`PASSWORD`]).
    pub email: String,
    pub grpc_url: String,
    pub access_token: String,
    pub service_token: String,
}

pub async fn start() -> Fixture {
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
    let listeners = auth_service::bind(loopback, loopback).await.expect("bind");
    let grpc_url = format!("http://{}", listeners.grpc.local_addr().expect("addr"));
    let http_url = format!("http://{}", listeners.http.local_addr().expect("addr"));
    tokio::spawn(auth_service::run(service.clone(), listeners, std::future::pending()));
    let meta = ClientMeta { ip: [127, 0, 0, 1].into(), user_agent: None };
    let signed_in =
        service.signup("Bench", "bench@example.com", "correct horse battery staple", &meta).await.expect("signup");
    let (service_token, _) = service.issue_service_token("bench", SERVICE_SECRET).await.expect("service token");
    Fixture {
        _dir: Some(dir),
        http_url,
        email: "bench@example.com".to_owned(),
        grpc_url,
        access_token: signed_in.tokens.access_token,
        service_token,
    }
}

/// A server in another process (`cargo xtask bench` starts one), as SPEC §10 prescribes: the
/// user signs up over HTTP, the service token comes from `IssueServiceToken`.
async fn external(http: String, grpc_url: String) -> Fixture {
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let body = serde_json::json!({"name": "Bench", "email": email, "password": PASSWORD});
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
    Fixture { _dir: None, http_url: http, email, grpc_url, access_token, service_token: issued.token }
}

pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
    request
}

pub fn validate_request(token: &str) -> ValidateRequest {
    ValidateRequest { credential: token.to_owned(), ip: String::new(), origin: String::new() }
}
