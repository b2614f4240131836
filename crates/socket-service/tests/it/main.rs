//! The socket service's one integration-test binary: a real auth service (testkit) and one or
//! two socket services on port 0, driven by a real tokio-tungstenite client, on SQLite + the
//! in-process bus always and on PostgreSQL + Redis when `DATABASE_URL` and `REDIS_URL` are set.

// Tests read the wall clock to build tokens, timestamps and unique names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod handshake;
mod messages;
mod publish;
mod refresh;
mod revocation;
mod tickets;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use auth_contract::{
    AuthContext,
    headers::{ContextKey, sign_context},
    proto::{IssueServiceTokenRequest, auth_internal_client::AuthInternalClient},
};
use futures::{SinkExt, StreamExt};
use platform::{bus::MemoryBus, env::MapEnv};
use serde_json::{Value, json};
use socket_service::{Deps, Mode, SocketConfig, SocketService};
use testkit::{CONTEXT_SECRET, SERVICE_SECRET, TestApp};
use tokio::{net::TcpStream, sync::oneshot};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue},
};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One socket service under test.
pub struct Socket {
    pub service: SocketService,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Which bus a socket service listens to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BusChoice {
    /// The auth service's events (the embedded bus, or the same Redis).
    Shared,
    /// A bus of its own that hears no auth event, as if every event were lost.
    Deaf,
}

pub async fn spawn_socket(app: &TestApp, vars: &[(&str, &str)]) -> Socket {
    spawn_socket_on(app, vars, BusChoice::Shared).await
}

/// Starts a socket service talking to `app`'s auth service; on the PostgreSQL backend it
/// builds its own Redis bus and stores with the app's key prefix, so it shares the auth
/// service's events.
pub async fn spawn_socket_on(app: &TestApp, vars: &[(&str, &str)], bus: BusChoice) -> Socket {
    let mut env = MapEnv::new([
        ("AUTH_SERVICE_URL", app.grpc.as_str()),
        ("SERVICE_SECRET", SERVICE_SECRET),
        ("CONTEXT_SIGNING_SECRET", CONTEXT_SECRET),
        ("SOCKET_PORT", "0"),
    ]);
    if let Some((url, prefix)) = &app.redis {
        env.set("REDIS_URL", url.clone());
        env.set("REDIS_KEY_PREFIX", prefix.clone());
    }
    for (k, v) in vars {
        env.set(*k, *v);
    }
    let config = SocketConfig::from_env(&env, Mode::Embedded).expect("socket config");
    let mut deps = match &app.redis {
        Some((url, prefix)) => Deps::redis(url, prefix).await.expect("redis"),
        None => Deps::in_memory(app.bus.clone()),
    };
    if bus == BusChoice::Deaf {
        deps.bus = Arc::new(MemoryBus::default());
    }
    let service = SocketService::new(config, deps).expect("service");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(socket_service::run(service.clone(), listener, async move {
        let _ = rx.await;
    }));
    // `run` subscribes to the bus before serving; wait until it answers.
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("http://{addr}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Socket { service, addr, http, shutdown: Some(tx), server: Some(server) }
}

impl Socket {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the service (graceful shutdown) and waits for `run` to return.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }

    /// The body of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// No connection of this node was ever closed with 1011.
    pub async fn assert_no_1011(&self) {
        let metrics = self.metrics().await;
        assert!(!metrics.contains("code=\"1011\""), "a connection closed with 1011:\n{metrics}");
    }

    /// Connection ids stored for a user.
    pub async fn stored_for(&self, user: &str) -> Vec<String> {
        self.service.contexts().connections_of(user).await.unwrap()
    }
}

/// A refused handshake: its HTTP status and problem body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
    pub headers: tungstenite::http::HeaderMap,
}

pub async fn connect_with(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, tungstenite::http::Response<Option<Vec<u8>>>), Refused> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    match connect_async(request).await {
        Ok(pair) => Ok(pair),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.body().as_deref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
            Err(Refused { status, body, headers })
        }
        Err(other) => panic!("handshake failed without an HTTP answer: {other}"),
    }
}

pub async fn connect_bearer(socket: &Socket, token: &str) -> Ws {
    match connect_with(&socket.ws_url(), &[("authorization", &format!("Bearer {token}"))]).await {
        Ok((ws, _)) => ws,
        Err(refused) => panic!("connection refused: {refused:?}"),
    }
}

/// Asserts the handshake was refused with `status` and problem `code`, before any upgrade.
pub async fn expect_refused(url: &str, headers: &[(&str, &str)], status: u16, code: &str) -> Refused {
    match connect_with(url, headers).await {
        Ok(_) => panic!("expected {status} {code}, but the socket was opened"),
        Err(refused) => {
            assert_eq!(
                (refused.status, refused.body["code"].as_str().unwrap_or_default()),
                (status, code),
                "{:?}",
                refused.body
            );
            assert!(refused.body["request_id"].is_string(), "{:?}", refused.body);
            assert_eq!(
                refused.headers.get("content-type").and_then(|v| v.to_str().ok()),
                Some("application/problem+json")
            );
            refused
        }
    }
}

/// What the client saw next.
#[derive(Debug, PartialEq)]
pub enum Got {
    Json(Value),
    Closed(Option<u16>),
}

/// The next JSON message or close within `within` (`None` on timeout); pings and pongs are
/// skipped. Asserts that no close is ever 1011.
pub async fn next(ws: &mut Ws, within: Duration) -> Option<Got> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        let got = match frame {
            None | Some(Err(_)) => Got::Closed(None),
            Some(Ok(Message::Text(text))) => Got::Json(serde_json::from_str(text.as_str()).expect("server sent JSON")),
            Some(Ok(Message::Close(frame))) => Got::Closed(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
        };
        if let Got::Closed(Some(code)) = got {
            assert_ne!(code, 1011, "1011 is for server faults only");
        }
        return Some(got);
    }
}

/// The next JSON message, failing on a close or a timeout.
pub async fn next_json(ws: &mut Ws) -> Value {
    match next(ws, Duration::from_secs(5)).await {
        Some(Got::Json(value)) => value,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Skips messages until the server closes; returns the close code.
pub async fn expect_close(ws: &mut Ws, within: Duration) -> u16 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(ws, left).await {
            Some(Got::Json(_)) => {}
            Some(Got::Closed(Some(code))) => return code,
            Some(Got::Closed(None)) => panic!("the connection dropped without a close frame"),
            None => panic!("no close within {within:?}"),
        }
    }
}

pub async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into())).await.expect("send");
}

/// Round trip: proves the server processed everything sent before.
pub async fn ping(ws: &mut Ws) {
    send(ws, json!({"type": "ping", "ref": "barrier"})).await;
    loop {
        let message = next_json(ws).await;
        if message["type"] == "pong" {
            assert_eq!(message["ref"], "barrier");
            return;
        }
    }
}

/// Asserts nothing but pings arrives for `quiet`.
pub async fn expect_silence(ws: &mut Ws, quiet: Duration) {
    if let Some(got) = next(ws, quiet).await {
        panic!("expected nothing, got {got:?}");
    }
}

/// The context the auth service gives a credential.
pub async fn context_of(app: &TestApp, token: &str) -> Arc<AuthContext> {
    app.contract_client().validate(token, None, None).await.expect("valid credential")
}

/// Signed gateway headers for `POST {path}` with `context`.
pub fn signed(context: &AuthContext, path: &str) -> reqwest::header::HeaderMap {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let request_id = uuid_like();
    sign_context(
        &ContextKey::new(CONTEXT_SECRET),
        context,
        &reqwest::Method::POST,
        path,
        &request_id,
        i64::try_from(now).unwrap(),
    )
    .expect("sign")
}

fn uuid_like() -> String {
    format!("req-{}", SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos())
}

/// A service token straight from the auth service, as a backend service would hold.
pub async fn service_token(app: &TestApp) -> String {
    let mut grpc = AuthInternalClient::connect(app.grpc.clone()).await.expect("grpc");
    let response = grpc
        .issue_service_token(IssueServiceTokenRequest {
            service_name: "orders".to_owned(),
            service_secret: SERVICE_SECRET.to_owned(),
        })
        .await
        .expect("service token");
    response.into_inner().token
}

/// Moves the auth service's manual clock to the wall clock, for tests that use real token
/// lifetimes (the socket service keeps time with the system clock).
pub fn sync_clock(app: &TestApp) {
    let real = time::OffsetDateTime::now_utc();
    let manual = platform::clock::Clock::now(&app.clock);
    if real > manual {
        app.clock.advance(real - manual);
    }
}
