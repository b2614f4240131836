//! Socket-service figures of SPEC §10, measured against a running Portcullis (started by
//! `cargo xtask bench`, in its own process): WebSocket connect + validate p50/p99 (a cached
//! credential, and a fresh one each time), revocation → close p99, and server memory per idle
//! authenticated connection at 10 000 connections (the server's RSS before and after).
//!
//! Needs `BENCH_AUTH_HTTP` (the auth service's REST base), `BENCH_SOCKET_URL` (`ws://…`) and
//! `BENCH_SERVER_PID`; without them it says so and exits.

// Benchmarks read the wall clock.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest},
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const PASSWORD: &str = "correct horse battery staple";
const CONNECT_SAMPLES: usize = 1000;
const FRESH_SAMPLES: usize = 200;
const REVOCATIONS: usize = 100;
const IDLE_CONNECTIONS: usize = 10_000;

struct Env {
    auth: String,
    socket: String,
    pid: u32,
    http: reqwest::Client,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    println!("{name:<46} n={:<5} p50 {:>8.3} ms   p99 {:>8.3} ms", samples.len(), ms(p50), ms(p99));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{nanos:x}-{}", std::process::id())
}

impl Env {
    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self.http.post(format!("{}/api/v1/auth{path}", self.auth)).json(&body).send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.unwrap()
    }

    /// A new user; returns (access token, refresh token).
    async fn signup(&self, tag: &str) -> (String, String) {
        let email = format!("{tag}-{}@bench.example.com", unique());
        let body = self.post("/signup", json!({"name": "Bench", "email": email, "password": PASSWORD})).await;
        (body["access_token"].as_str().unwrap().to_owned(), body["refresh_token"].as_str().unwrap().to_owned())
    }

    async fn connect(&self, token: &str) -> Ws {
        let mut request = format!("{}/ws", self.socket).into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        connect_async(request).await.expect("upgrade").0
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).expect("server process");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

async fn connect_and_validate(env: &Env) {
    let (access, mut refresh) = env.signup("connect").await;
    // The first validation of this token fills the socket service's credential cache.
    drop(env.connect(&access).await);
    let mut cached = Vec::with_capacity(CONNECT_SAMPLES);
    for _ in 0..CONNECT_SAMPLES {
        let started = Instant::now();
        let mut ws = env.connect(&access).await;
        cached.push(started.elapsed());
        let _ = ws.close(None).await;
    }
    summary("connect + validate, cached credential", cached);
    // A fresh access token each time (a chain of refreshes): validated by the auth service.
    let mut tokens = Vec::with_capacity(FRESH_SAMPLES);
    for _ in 0..FRESH_SAMPLES {
        let body = env.post("/refresh", json!({"refresh_token": refresh})).await;
        refresh = body["refresh_token"].as_str().unwrap().to_owned();
        tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    let mut fresh = Vec::with_capacity(FRESH_SAMPLES);
    for token in &tokens {
        let started = Instant::now();
        let mut ws = env.connect(token).await;
        fresh.push(started.elapsed());
        let _ = ws.close(None).await;
    }
    summary("connect + validate, uncached credential", fresh);
}

async fn revocation_to_close(env: &Env) {
    let mut users = Vec::with_capacity(REVOCATIONS);
    for _ in 0..REVOCATIONS {
        let (access, _) = env.signup("revoke").await;
        let ws = env.connect(&access).await;
        users.push((access, ws));
    }
    let mut samples = Vec::with_capacity(REVOCATIONS);
    for (access, mut ws) in users {
        let started = Instant::now();
        let response =
            env.http.post(format!("{}/api/v1/auth/logout", env.auth)).bearer_auth(&access).send().await.unwrap();
        assert!(response.status().is_success());
        loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    assert_eq!(frame.map(|f| u16::from(f.code)), Some(4409));
                    break;
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("no close after logout: {other:?}"),
            }
        }
        samples.push(started.elapsed());
    }
    summary("revocation (logout sent) -> 4409 received", samples);
}

async fn memory_per_idle_connection(env: &Env) {
    let (access, _) = env.signup("idle").await;
    drop(env.connect(&access).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = env.rss_kib();
    let started = Instant::now();
    let sockets: Vec<Ws> =
        stream::iter(0..IDLE_CONNECTIONS).map(|_| env.connect(&access)).buffer_unordered(64).collect().await;
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = env.rss_kib();
    let per = after.saturating_sub(before) as f64 / IDLE_CONNECTIONS as f64;
    println!(
        "idle connections: {} opened in {:.1} s; server RSS {before} KiB -> {after} KiB: {per:.2} KiB per connection",
        sockets.len(),
        opened.as_secs_f64(),
    );
    drop(sockets);
}

#[tokio::main]
async fn main() {
    let (Ok(auth), Ok(socket), Ok(pid)) =
        (std::env::var("BENCH_AUTH_HTTP"), std::env::var("BENCH_SOCKET_URL"), std::env::var("BENCH_SERVER_PID"))
    else {
        println!(
            "sockets bench: needs BENCH_AUTH_HTTP, BENCH_SOCKET_URL and BENCH_SERVER_PID (run `cargo xtask bench`)"
        );
        return;
    };
    let env = Env { auth, socket, pid: pid.parse().expect("BENCH_SERVER_PID"), http: reqwest::Client::new() };
    println!("socket service against {} (server pid {})", env.socket, env.pid);
    connect_and_validate(&env).await;
    revocation_to_close(&env).await;
    memory_per_idle_connection(&env).await;
}
