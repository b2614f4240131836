//! Test support shared by every Portcullis crate's integration tests: `spawn_app` starts a
//! fresh auth service on port 0 with its own database (a temporary SQLite file, or a new
//! PostgreSQL database and Redis key prefix), a manual clock, and typed helpers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod delay;
pub use delay::DelayProxy;

use std::{sync::Arc, time::Duration};

use auth_service::{
    AuthConfig, AuthService, Backends, Mode,
    store::{PostgresStore, SqliteStore},
};
use futures::StreamExt;
use platform::{
    bus::{BusMessage, EventBus, Subscription},
    clock::ManualClock,
    env::MapEnv,
};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const PASSWORD: &str = "correct horse battery staple";
pub const SERVICE_SECRET: &str = "test-service-secret-0123456789abcdef012345";
pub const CONTEXT_SECRET: &str = "test-context-secret-0123456789abcdef012345";
pub const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
pub const SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

/// Which storage and bus a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres { database_url: String, redis_url: String },
}

impl Backend {
    /// PostgreSQL + Redis when configured. In CI their absence is a failure, not a skip.
    pub fn shared() -> Option<Self> {
        let database_url = std::env::var("DATABASE_URL").ok().filter(|v| !v.is_empty());
        let redis_url = std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty());
        match (database_url, redis_url) {
            (Some(database_url), Some(redis_url)) => Some(Self::Postgres { database_url, redis_url }),
            _ if in_ci() => {
                panic!("CI must set DATABASE_URL and REDIS_URL: the PostgreSQL + Redis tests may not be skipped")
            }
            _ => {
                eprintln!("DATABASE_URL/REDIS_URL not set: PostgreSQL + Redis variant not run");
                None
            }
        }
    }
}

/// Whether this run is CI's (`CI` set and not `false`), where a missing service is a failure.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// RabbitMQ's URL (`AMQP_URL`) when configured. In CI its absence is a failure, not a skip.
pub fn amqp_url() -> Option<String> {
    match std::env::var("AMQP_URL").ok().filter(|v| !v.is_empty()) {
        Some(url) => Some(url),
        None if in_ci() => panic!("CI must set AMQP_URL: the RabbitMQ tests may not be skipped"),
        None => {
            eprintln!("AMQP_URL not set: RabbitMQ variant not run");
            None
        }
    }
}

/// Generates one test per backend for each named `async fn(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::Backend::shared() {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}

/// The concrete store, for tests that read tables directly.
pub enum RawStore {
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

pub struct TestApp {
    pub root: String,
    /// The gRPC endpoint, `http://127.0.0.1:port`.
    pub grpc: String,
    pub base: String,
    pub http: reqwest::Client,
    pub clock: ManualClock,
    pub service: AuthService,
    pub bus: Arc<dyn EventBus>,
    pub raw: RawStore,
    pub http_addr: std::net::SocketAddr,
    pub grpc_addr: std::net::SocketAddr,
    /// The Redis URL and key prefix this app uses (PostgreSQL + Redis backend only), so a
    /// gateway or socket service under test can share its bus.
    pub redis: Option<(String, String)>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A database URL naming `database` instead of the one in `url`.
fn with_database(url: &str, database: &str) -> String {
    let (head, query) = url.split_once('?').map_or((url, None), |(h, q)| (h, Some(q)));
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[scheme_end..].find('/') {
        Some(slash) => &head[..scheme_end + slash],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

/// A new, empty PostgreSQL database on the server `url` names; its URL.
pub async fn fresh_postgres_database(url: &str) -> String {
    use sqlx::Connection as _;
    let name = format!("pc_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("DATABASE_URL is set but PostgreSQL is unreachable: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    with_database(url, &name)
}

pub async fn spawn_auth(backend: Backend) -> TestApp {
    spawn_auth_with(backend, &[]).await
}

/// Starts an auth service with extra environment (`SESSION_TIMEOUT_MINUTES`, …).
pub async fn spawn_auth_with(backend: Backend, vars: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = MapEnv::new([
        ("SERVICE_SECRET", SERVICE_SECRET),
        ("CONTEXT_SIGNING_SECRET", CONTEXT_SECRET),
        ("DATA_DIR", &dir.path().to_string_lossy()),
        ("PASSWORD_HASH_CONCURRENCY", "2"),
        ("AUTH_PORT", "0"),
    ]);
    if let Backend::Postgres { database_url, redis_url } = &backend {
        env.set("DATABASE_URL", fresh_postgres_database(database_url).await);
        env.set("REDIS_URL", redis_url.clone());
        env.set("REDIS_KEY_PREFIX", format!("pc_test:{}:", uuid::Uuid::new_v4().simple()));
    }
    for (k, v) in vars {
        env.set(*k, *v);
    }
    let redis = match &backend {
        Backend::Postgres { redis_url, .. } => {
            Some((redis_url.clone(), env.0.get("REDIS_KEY_PREFIX").cloned().unwrap_or_default()))
        }
        Backend::Sqlite => None,
    };
    let config = AuthConfig::from_env(&env, Mode::Embedded).expect("test config");
    let backends = Backends::connect(&config).await.expect("backends reachable");
    let raw = match &config.backend {
        auth_service::Backend::Embedded { data_dir } => {
            RawStore::Sqlite(SqliteStore::open(&data_dir.join(auth_service::SQLITE_FILE)).await.expect("sqlite"))
        }
        auth_service::Backend::Shared { database_url, .. } => {
            use secrecy::ExposeSecret;
            RawStore::Postgres(PostgresStore::connect(database_url.expose_secret(), 2).await.expect("postgres"))
        }
    };
    let clock = ManualClock::default();
    let service = AuthService::new(config, backends.deps(Arc::new(clock.clone()))).expect("service");
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = auth_service::bind(loopback, loopback).await.expect("bind");
    let addr = listeners.http.local_addr().expect("addr");
    let grpc_addr = listeners.grpc.local_addr().expect("grpc addr");
    let (tx, server) = serve(&service, listeners);
    TestApp {
        root: format!("http://{addr}"),
        grpc: format!("http://{grpc_addr}"),
        base: format!("http://{addr}/api/v1/auth"),
        http: reqwest::Client::new(),
        clock,
        service,
        bus: backends.bus.clone(),
        raw,
        http_addr: addr,
        grpc_addr,
        redis,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
    }
}

type Server = (oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>);

fn serve(service: &AuthService, listeners: auth_service::Listeners) -> Server {
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(auth_service::run(service.clone(), listeners, async move {
        let _ = rx.await;
    }));
    (tx, server)
}

/// A fresh address so tests sharing one Redis never collide.
pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

pub async fn body(response: Response) -> Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// Asserts status and problem `code`, the content type, and returns the body.
pub async fn expect_problem(response: Response, status: u16, code: &str) -> Value {
    let got = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = body(response).await;
    assert_eq!((got, body["code"].as_str().unwrap_or_default()), (status, code), "body: {body}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], json!(status));
    assert!(body["request_id"].is_string(), "problem without request_id: {body}");
    body
}

pub async fn expect_status(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let body = body(response).await;
    assert_eq!(got, status, "body: {body}");
    body
}

/// A signed-in user: its tokens and session from signup or login.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub session_id: String,
    pub user_id: String,
}

impl Tokens {
    fn from_body(body: &Value) -> Self {
        let field = |v: &Value| v.as_str().unwrap_or_else(|| panic!("missing field in {body}")).to_owned();
        Self {
            access: field(&body["access_token"]),
            refresh: field(&body["refresh_token"]),
            session_id: field(&body["session"]["id"]),
            user_id: field(&body["user"]["id"]),
        }
    }
}

impl TestApp {
    /// Stops the HTTP and gRPC servers (the store and bus stay up), as an outage would.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }

    /// Serves again on the same addresses.
    pub async fn start_again(&mut self) {
        let listeners = auth_service::bind(self.http_addr, self.grpc_addr).await.expect("rebind");
        let (tx, server) = serve(&self.service, listeners);
        self.shutdown = Some(tx);
        self.server = Some(server);
    }

    /// A contract client for this app, with short timeouts for fault tests.
    pub fn contract_client(&self) -> auth_contract::AuthClient {
        self.contract_client_at(&self.grpc)
    }

    /// A contract client reaching this app's gRPC API at `endpoint` (a proxy in front of it).
    pub fn contract_client_at(&self, endpoint: &str) -> auth_contract::AuthClient {
        let mut config = auth_contract::ClientConfig::new(
            endpoint.to_owned(),
            "test-suite",
            secrecy::SecretString::from(SERVICE_SECRET.to_owned()),
        );
        config.timeout = Duration::from_millis(500);
        config.retries = 1;
        config.breaker_failures = 3;
        config.breaker_open_for = Duration::from_millis(300);
        auth_contract::AuthClient::new(config).expect("client")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.http.post(self.url(path)).json(body).send().await.expect("request")
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.http.get(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    pub async fn post_auth(&self, path: &str, token: &str, body: Option<&Value>) -> Response {
        let request = self.http.post(self.url(path)).bearer_auth(token);
        let request = match body {
            Some(b) => request.json(b),
            None => request,
        };
        request.send().await.expect("request")
    }

    pub async fn delete_auth(&self, path: &str, token: &str) -> Response {
        self.http.delete(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    pub async fn signup(&self, email: &str) -> Tokens {
        let response =
            self.post_json("/signup", &json!({"name": "Test User", "email": email, "password": PASSWORD})).await;
        Tokens::from_body(&expect_status(response, StatusCode::CREATED).await)
    }

    pub async fn login_as(&self, email: &str, password: &str, user_agent: &str) -> Response {
        self.http
            .post(self.url("/login"))
            .header("user-agent", user_agent)
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("request")
    }

    pub async fn login(&self, email: &str, user_agent: &str) -> Tokens {
        let response = self.login_as(email, PASSWORD, user_agent).await;
        Tokens::from_body(&expect_status(response, StatusCode::OK).await)
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/refresh", &json!({"refresh_token": refresh_token})).await
    }

    pub async fn refreshed(&self, refresh_token: &str) -> Tokens {
        Tokens::from_body(&expect_status(self.refresh(refresh_token).await, StatusCode::OK).await)
    }

    pub async fn events(&self) -> Subscription {
        self.bus.subscribe(&[auth_contract::events::ALL]).await.expect("subscribe")
    }

    /// Every text column of every table, for "no raw secret is stored" checks.
    pub async fn dump_tables(&self) -> String {
        const QUERIES: [&str; 9] = [
            "SELECT id || '|' || name || '|' || email || '|' || password_hash || '|' || role AS t FROM users",
            "SELECT id || '|' || user_id || '|' || device || '|' || COALESCE(user_agent, '') || '|' || ip || '|' || COALESCE(end_reason, '') AS t FROM sessions",
            "SELECT id || '|' || token_hash || '|' || session_id || '|' || session_kind || '|' || COALESCE(user_id, '') AS t FROM refresh_tokens",
            "SELECT jti AS t FROM revoked_jtis",
            "SELECT COALESCE(user_id, '') || '|' || action || '|' || outcome || '|' || COALESCE(ip, '') || '|' || detail AS t FROM audit_log",
            "SELECT id || '|' || user_id || '|' || name || '|' || token_hash || '|' || prefix || '|' || last_four || '|' || scopes || '|' || COALESCE(legacy_id, '') AS t FROM personal_access_tokens",
            "SELECT id || '|' || owner_id || '|' || name || '|' || ip_allowlist || '|' || allowed_origins AS t FROM clients",
            "SELECT id || '|' || client_id || '|' || name || '|' || key_hash || '|' || prefix || '|' || last_four || '|' || scopes AS t FROM api_keys",
            "SELECT id || '|' || client_id || '|' || api_key_id || '|' || external_user_id || '|' || scopes || '|' || ip AS t FROM sdk_sessions",
        ];
        let mut out = String::new();
        for sql in QUERIES {
            let rows: Vec<String> = match &self.raw {
                RawStore::Sqlite(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await.expect(sql),
                RawStore::Postgres(s) => sqlx::query_scalar(sql).fetch_all(s.pool()).await.expect(sql),
            };
            for row in rows {
                out.push_str(&row);
                out.push('\n');
            }
        }
        out
    }
}

impl RawStore {
    pub fn store(&self) -> Arc<dyn auth_service::store::Store> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(s) => Arc::new(s.clone()),
        }
    }
}

/// Waits for the first event on `channel` whose payload satisfies `pred`.
pub async fn next_event(events: &mut Subscription, channel: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let message = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no {channel} event within 5 s"))
            .expect("subscription ended");
        if let BusMessage::Event(event) = message
            && event.channel == channel
        {
            let payload: Value = serde_json::from_str(&event.payload).expect("event payload is JSON");
            if pred(&payload) {
                assert!(payload["event_id"].is_string() && payload["occurred_at"].is_string(), "{payload}");
                return payload;
            }
        }
    }
}

/// A registered client and its first API key.
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    pub id: String,
    pub key: String,
    pub key_id: String,
}

impl TestApp {
    pub async fn put_auth(&self, path: &str, token: &str, body: &Value) -> Response {
        self.http.put(self.url(path)).bearer_auth(token).json(body).send().await.expect("request")
    }

    /// Registers a client owned by `owner` (`body` as for `POST /client/register`).
    pub async fn register_client(&self, owner: &Tokens, body: Value) -> RegisteredClient {
        let response = self.post_auth("/client/register", &owner.access, Some(&body)).await;
        let created = expect_status(response, StatusCode::CREATED).await;
        RegisteredClient {
            id: created["client"]["id"].as_str().expect("client id").to_owned(),
            key: created["api_key"]["key"].as_str().expect("key shown once").to_owned(),
            key_id: created["api_key"]["id"].as_str().expect("key id").to_owned(),
        }
    }

    /// Creates a PAT for `user` (`body` as for `POST /tokens`); returns its id and secret.
    pub async fn create_pat(&self, user: &Tokens, body: Value) -> (String, String) {
        let created =
            expect_status(self.post_auth("/tokens", &user.access, Some(&body)).await, StatusCode::CREATED).await;
        (
            created["id"].as_str().expect("pat id").to_owned(),
            created["token"].as_str().expect("pat shown once").to_owned(),
        )
    }
}

/// A slowloris client: connects to `addr`, sends half a request head and then nothing.
/// Returns how long the server took to close the connection, or `None` if it was still open
/// after `patience`.
pub async fn slow_client_is_dropped_after(addr: std::net::SocketAddr, patience: Duration) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Slow: ").await.expect("send");
    let started = tokio::time::Instant::now();
    let mut sink = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(started + patience, stream.read(&mut sink)).await {
            Err(_) => return None,
            // Closed (a 408 answer first, or not): the server let go.
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// An idle keep-alive client: one complete request, then silence. Returns how long the server
/// kept the idle connection, or `None` if it was still open after `patience`.
pub async fn idle_keep_alive_is_dropped_after(addr: std::net::SocketAddr, patience: Duration) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: idle\r\n\r\n").await.expect("send");
    let mut answer = [0u8; 4096];
    let n = stream.read(&mut answer).await.expect("answer");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));
    let started = tokio::time::Instant::now();
    loop {
        match tokio::time::timeout_at(started + patience, stream.read(&mut answer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// A port nothing listens on now, for a server a test starts as a child process. Taken below
/// the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, 32768 up by default), which
/// outgoing connections draw their local ports from: a port the kernel handed out for a
/// moment (`bind` to port 0) could be given to any outgoing connection before the child binds
/// it ("Address already in use").
pub fn free_port() -> u16 {
    const BELOW_EPHEMERAL: std::ops::Range<u16> = 20_000..32_000;
    let span = u128::from(BELOW_EPHEMERAL.end - BELOW_EPHEMERAL.start);
    loop {
        let offset = uuid::Uuid::new_v4().as_u128() % span;
        let port = BELOW_EPHEMERAL.start + u16::try_from(offset).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
