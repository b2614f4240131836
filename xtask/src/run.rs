//! `cargo xtask run --distributed [--scenario]`: the three binaries as separate processes on
//! the local PostgreSQL, Redis and RabbitMQ, the way a deployment runs them, without Docker.
//!
//! Each run gets a fresh database (`pc_run_<id>`, dropped at the end), its own
//! `REDIS_KEY_PREFIX` and `AMQP_QUEUE_PREFIX` (its queues deleted at the end), free loopback
//! ports and generated secrets. The children are killed when the run ends, however it ends
//! (Ctrl-C, SIGTERM, a failed step, a panic): they are held with `kill_on_drop`.
//!
//! Without `--scenario` it prints the addresses and waits for Ctrl-C. With it, it plays what a
//! user of the platform does and checks each answer: sign up through the gateway, call an
//! authenticated route (the upstream verifies the signed context), open a WebSocket through
//! the gateway, log out (the socket is closed with 4409), send a webhook (it is delivered
//! through RabbitMQ); then every metric the dashboard and the alerts read must appear in a
//! scrape of the three services' `/metrics`, and the traces the services exported to an OTLP
//! receiver (the auth and socket services over gRPC, the gateway over HTTP) must show the
//! authenticated call as one trace across the gateway and the auth service — a new trace
//! linked to the client's, since the client is no trusted proxy — with no credential,
//! password, email or secret in any exported text.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use auth_contract::headers::{ContextKey, X_USER_ID, verify_context};
use futures::StreamExt as _;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _, protocol::frame::coding::CloseCode};

const USAGE: &str = "usage: cargo xtask run --distributed [--scenario]";
const WEBHOOK_SOURCE: &str = "runcheck";
const WEBHOOK_TOKEN: &str = "a-webhook-token-for-the-distributed-run";
/// The trace the scenario's client says its authenticated call belongs to.
const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
/// How long a service has to answer `/ready` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long any one scenario step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(args: &[&str]) -> Result<(), String> {
    let scenario = match args {
        ["--distributed"] => false,
        ["--distributed", "--scenario"] | ["--scenario", "--distributed"] => true,
        _ => return Err(USAGE.to_owned()),
    };
    let root = crate::workspace_root();
    let binaries = build(&root).await?;
    let upstream = Upstream::start().await?;
    let receiver = crate::otlp::Receiver::start().await?;
    let mut deployment = Deployment::prepare(upstream.addr).await?;
    let outcome = async {
        deployment.start(&binaries, &receiver).await?;
        if scenario {
            let sensitive = play(&deployment, &upstream).await?;
            check_scrapes(&root, &deployment).await?;
            check_traces(&deployment, &upstream, &receiver.received, &sensitive).await
        } else {
            deployment.describe();
            println!("Ctrl-C ends the three services.");
            wait_for_signal().await;
            Ok(())
        }
    };
    let result = tokio::select! {
        result = outcome => result,
        () = wait_for_signal() => Err("interrupted".to_owned()),
    };
    deployment.stop().await;
    if result.is_ok() && scenario {
        println!("distributed scenario: every step passed");
    }
    result
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Builds the three binaries (reusing whatever the test build left) and returns their
/// directory.
async fn build(root: &Path) -> Result<PathBuf, String> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["build", "--locked", "-p", "auth-service", "-p", "gateway", "-p", "socket-service", "--bins"])
        .current_dir(root)
        .status()
        .await
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err("cargo build of the three binaries failed".to_owned());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let target = if target.is_absolute() { target } else { root.join(target) };
    Ok(target.join("debug"))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).unwrap_or_else(|e| panic!("the OS random source failed: {e}"));
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A free loopback port (bound and released; the service binds it moments later).
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// The `DATABASE_URL` of the server with `database` in place of its database.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// One running deployment: its environment, its children, what it must clean up.
struct Deployment {
    id: String,
    server_url: String,
    database: String,
    amqp_url: String,
    queue_prefix: String,
    env: Vec<(String, String)>,
    routes: tempfile::NamedTempFile,
    auth: SocketAddr,
    auth_grpc: SocketAddr,
    gateway: SocketAddr,
    socket: SocketAddr,
    context_secret: String,
    children: Vec<(&'static str, Child)>,
}

impl Deployment {
    async fn prepare(upstream: SocketAddr) -> Result<Self, String> {
        let var = |name: &str, default: &str| platform::env::EnvExt::string_or(&platform::env::OsEnv, name, default);
        let server_url = var("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres");
        let redis_url = var("REDIS_URL", "redis://127.0.0.1:6379");
        let amqp_url = var("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        let id = random_hex(6);
        let database = format!("pc_run_{id}");
        let mut conn = sqlx::PgConnection::connect(&server_url)
            .await
            .map_err(|e| format!("PostgreSQL at DATABASE_URL is unreachable: {e}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("CREATE DATABASE {database}: {e}"))?;
        let ports = [free_port()?, free_port()?, free_port()?, free_port()?];
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let (auth, auth_grpc, gateway, socket) = (at(ports[0]), at(ports[1]), at(ports[2]), at(ports[3]));
        let context_secret = random_hex(32);
        let queue_prefix = format!("pc_run.{id}.");
        let mut routes = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let routes_text = format!(
            "[[routes]]\nprefix = \"/v1/user/run\"\nupstream = \"http://{upstream}\"\nauth = [\"user\", \"pat\"]\n\n\
             [[routes]]\nprefix = \"/v1/user/limited\"\nupstream = \"http://{upstream}\"\nrate_limit = \"1/minute\"\n\n\
             [webhooks.{WEBHOOK_SOURCE}]\nprofile = \"token\"\nsecrets = [\"{WEBHOOK_TOKEN}\"]\nheader = \"x-run-token\"\n\
             id_pointer = \"/eventId\"\nupstream = \"http://{upstream}/hooks\"\n"
        );
        std::io::Write::write_all(&mut routes, routes_text.as_bytes()).map_err(|e| e.to_string())?;
        let env = [
            ("DATABASE_URL", with_database(&server_url, &database)),
            ("REDIS_URL", redis_url),
            ("AMQP_URL", amqp_url.clone()),
            ("AMQP_QUEUE_PREFIX", queue_prefix.clone()),
            ("REDIS_KEY_PREFIX", format!("pc_run:{id}:")),
            ("JWT_SECRET", random_hex(32)),
            ("SERVICE_SECRET", random_hex(32)),
            ("CONTEXT_SIGNING_SECRET", context_secret.clone()),
            ("HOST", "127.0.0.1".to_owned()),
            ("TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
            ("LOG_FORMAT", "text".to_owned()),
            // Finished spans leave within a fifth of a second, so the scenario need not wait.
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
            ("RUST_LOG", var("RUST_LOG", "warn")),
            ("AUTH_SERVICE_URL", format!("http://{auth_grpc}")),
            ("AUTH_HTTP_URL", format!("http://{auth}")),
            ("SOCKET_SERVICE_URL", format!("http://{socket}")),
            ("GATEWAY_CONFIG", routes.path().to_string_lossy().into_owned()),
            ("DATA_DIR", std::env::temp_dir().join(format!("pc-run-{id}")).to_string_lossy().into_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Ok(Self {
            id,
            server_url,
            database,
            amqp_url,
            queue_prefix,
            env,
            routes,
            auth,
            auth_grpc,
            gateway,
            socket,
            context_secret,
            children: Vec::new(),
        })
    }

    /// Starts the auth service, then the socket service, then the gateway, each once the one
    /// before is ready. The auth and socket services export spans to `receiver` over gRPC, the
    /// gateway over HTTP; the gateway trusts no proxy, so the scenario's client is untrusted.
    async fn start(&mut self, binaries: &Path, receiver: &crate::otlp::Receiver) -> Result<(), String> {
        let grpc = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", receiver.grpc)),
        ];
        let services = [
            (
                "auth-service",
                self.auth,
                [("PORT", self.auth.port().to_string()), ("GRPC_PORT", self.auth_grpc.port().to_string())]
                    .into_iter()
                    .chain(grpc.clone())
                    .collect::<Vec<_>>(),
            ),
            (
                "socket-service",
                self.socket,
                [("PORT", self.socket.port().to_string())].into_iter().chain(grpc).collect(),
            ),
            (
                "gateway",
                self.gateway,
                vec![
                    ("PORT", self.gateway.port().to_string()),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_owned()),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", receiver.http)),
                    ("TRUSTED_PROXIES", "192.0.2.1/32".to_owned()),
                ],
            ),
        ];
        for (binary, addr, own) in services {
            let mut command = Command::new(binaries.join(binary));
            command.env_clear().envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            if let Some(path) = std::env::var_os("PATH") {
                command.env("PATH", path);
            }
            for (name, value) in own {
                command.env(name, value);
            }
            let child = command
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("{binary}: {e} (in {})", binaries.display()))?;
            self.children.push((binary, child));
            self.wait_ready(binary, addr).await?;
        }
        Ok(())
    }

    async fn wait_ready(&mut self, binary: &str, addr: SocketAddr) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some((_, child)) = self.children.iter_mut().find(|(name, _)| *name == binary)
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("{binary} exited at start-up ({status})"));
            }
            let ready = client.get(format!("http://{addr}/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                println!("{binary} ready on http://{addr}");
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("{binary} not ready on {addr} within {START_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn describe(&self) {
        println!("gateway        http://{}", self.gateway);
        println!("auth service   http://{} (gRPC {})", self.auth, self.auth_grpc);
        println!("socket service http://{}", self.socket);
        println!("database       {} (dropped on exit), Redis prefix pc_run:{}:", self.database, self.id);
    }

    /// Ends the children, drops the database and deletes the run's queues.
    async fn stop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.start_kill();
        }
        for (_, child) in &mut self.children {
            let _ = child.wait().await;
        }
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.server_url).await {
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database);
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await {
                eprintln!("could not drop {}: {e}", self.database);
            }
        }
        let runtime = async_rs::Runtime::tokio_with_handle(tokio::runtime::Handle::current());
        let options = lapin::ConnectionProperties::default();
        if let Ok(connection) = lapin::Connection::connect_with_runtime(&self.amqp_url, options, runtime).await
            && let Ok(channel) = connection.create_channel().await
        {
            for suffix in ["", ".dead"] {
                let Ok(queue) =
                    lapin::types::ShortString::try_new(format!("{}{WEBHOOK_SOURCE}{suffix}", self.queue_prefix))
                else {
                    continue;
                };
                let _ = channel.queue_delete(queue, lapin::options::QueueDeleteOptions::default()).await;
            }
        }
        let data_dir = self.env.iter().find(|(k, _)| k == "DATA_DIR").map(|(_, v)| PathBuf::from(v));
        if let Some(dir) = data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = &self.routes;
    }

    fn gateway_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }
}

/// What the scenario's upstream received: authenticated calls' verified user ids and
/// webhook deliveries' ids.
#[derive(Default)]
struct Seen {
    users: Vec<String>,
    /// The `traceparent` of each authenticated call.
    traceparents: Vec<String>,
    deliveries: Vec<(Option<String>, Value)>,
}

/// The upstream behind the gateway: verifies every proxied request's signed context (a
/// request it cannot verify gets 401, failing the scenario) and records webhook deliveries.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    key: Arc<Mutex<Option<ContextKey>>>,
}

impl Upstream {
    async fn start() -> Result<Self, String> {
        use axum::{
            Router,
            http::{HeaderMap, Method, StatusCode, Uri},
            routing::{any, post},
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let key: Arc<Mutex<Option<ContextKey>>> = Arc::default();
        let (seen_by_route, key_by_route, seen_by_hook) = (seen.clone(), key.clone(), seen.clone());
        let router = Router::new()
            .route(
                "/hooks",
                post(move |headers: HeaderMap, body: axum::body::Bytes| async move {
                    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen_by_hook.lock().unwrap_or_else(std::sync::PoisonError::into_inner).deliveries.push((id, body));
                    StatusCode::OK
                }),
            )
            .route("/v1/user/limited", any(|| async { (StatusCode::OK, json!({"limited": false}).to_string()) }))
            .route(
                "/v1/user/run",
                any(move |method: Method, uri: Uri, headers: HeaderMap| async move {
                    let Some(key) = key_by_route.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
                    else {
                        return (StatusCode::SERVICE_UNAVAILABLE, String::new());
                    };
                    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str()).to_owned();
                    let now = platform::clock::Clock::now(&platform::clock::SystemClock).unix_timestamp();
                    match verify_context(&key, &headers, &method, &path, now) {
                        Ok(verified) => {
                            let user = headers.get(X_USER_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
                            let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
                            let mut seen = seen_by_route.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            seen.users.push(user.to_owned());
                            seen.traceparents.push(traceparent.unwrap_or_default().to_owned());
                            (StatusCode::OK, json!({"user": verified.user_id}).to_string())
                        }
                        Err(e) => (StatusCode::UNAUTHORIZED, e.to_string()),
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { addr, seen, key })
    }

    fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Polls `done` every 100 ms until it holds or [`STEP_TIMEOUT`] passes.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while !done() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{what}: not within {STEP_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn json_of(response: reqwest::Response, expected: u16, step: &str) -> Result<Value, String> {
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status != expected {
        return Err(format!("{step}: {status} (expected {expected}): {body}"));
    }
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The scenario, step by step; the first step that does not get its answer fails the run.
/// Returns what no exported span may contain: the user's email, password and tokens.
async fn play(deployment: &Deployment, upstream: &Upstream) -> Result<Vec<String>, String> {
    *upstream.key.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some(ContextKey::new(&deployment.context_secret));
    let http = reqwest::Client::builder().timeout(STEP_TIMEOUT).build().map_err(|e| e.to_string())?;

    let email = format!("run-{}@example.com", deployment.id);
    let password = "correct horse battery staple";
    let body = json!({"name": "Distributed Run", "email": email, "password": password});
    let signup = http.post(deployment.gateway_url("/v1/auth/signup")).json(&body).send().await;
    let signed_up = json_of(signup.map_err(|e| format!("signup: {e}"))?, 201, "signup").await?;
    let access = signed_up["access_token"].as_str().ok_or("signup: no access_token")?.to_owned();
    let user_id = signed_up["user"]["id"].as_str().ok_or("signup: no user id")?.to_owned();
    let refresh = signed_up["refresh_token"].as_str().unwrap_or_default().to_owned();
    println!("1. signed up through the gateway as {email}");

    let client_traceparent = format!("00-{CLIENT_TRACE}-b7ad6b7169203331-01");
    let call = http
        .get(deployment.gateway_url("/v1/user/run?x=1"))
        .bearer_auth(&access)
        .header("traceparent", client_traceparent)
        .send()
        .await;
    let answered = json_of(call.map_err(|e| format!("authenticated call: {e}"))?, 200, "authenticated call").await?;
    if answered["user"] != json!(user_id) || upstream.seen(|s| s.users.last() != Some(&user_id)) {
        return Err(format!("authenticated call: the upstream saw {answered}, not user {user_id}"));
    }
    // A hostile client puts a credential where the services read no credential: in the path
    // and in the query. No exported span may carry it (checked in `check_traces`).
    for path in [format!("/v1/auth/{access}"), format!("/v1/user/run?token={access}")] {
        http.get(deployment.gateway_url(&path)).send().await.map_err(|e| format!("{path}: {e}"))?;
    }
    let anonymous = http.get(deployment.gateway_url("/v1/user/run")).send().await;
    json_of(anonymous.map_err(|e| e.to_string())?, 401, "unauthenticated call").await.map(drop)?;
    for (n, expected) in [(1, 200), (2, 429)] {
        let call = http.get(deployment.gateway_url("/v1/user/limited")).bearer_auth(&access).send().await;
        json_of(call.map_err(|e| e.to_string())?, expected, &format!("limited call {n}")).await.map(drop)?;
    }
    println!(
        "2. an authenticated request reached the upstream with a verified context (and none without); a route's limit answered 429"
    );

    let url = format!("ws://{}/v1/socket", deployment.gateway);
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    let bearer = format!("Bearer {access}").parse().map_err(|e| format!("{e}"))?;
    request.headers_mut().insert("authorization", bearer);
    let (mut socket, _) =
        tokio_tungstenite::connect_async(request).await.map_err(|e| format!("socket through the gateway: {e}"))?;
    futures::SinkExt::send(&mut socket, Message::text(r#"{"type":"ping"}"#)).await.map_err(|e| e.to_string())?;
    let pong = tokio::time::timeout(STEP_TIMEOUT, socket.next()).await.map_err(|_| "socket: no pong")?;
    match pong {
        Some(Ok(Message::Text(text))) if text.contains("pong") => {}
        other => return Err(format!("socket: expected a pong, got {other:?}")),
    }
    println!("3. a WebSocket opened through the gateway and answered a ping");

    let logout = http.post(deployment.gateway_url("/v1/auth/logout")).bearer_auth(&access).send().await;
    let logout = logout.map_err(|e| format!("logout: {e}"))?;
    if !logout.status().is_success() {
        return Err(format!("logout: {}", logout.status()));
    }
    let closed = tokio::time::timeout(STEP_TIMEOUT, async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Message::Close(close)) => return close.map(|c| c.code),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .map_err(|_| "logout: the socket stayed open")?;
    if closed != Some(CloseCode::Library(4409)) {
        return Err(format!("logout: the socket closed with {closed:?}, not 4409"));
    }
    let after = http.get(deployment.gateway_url("/v1/user/run")).bearer_auth(&access).send().await;
    json_of(after.map_err(|e| e.to_string())?, 401, "a call after logout").await.map(drop)?;
    println!("4. logging out closed the socket with 4409 and the token is refused at the gateway");

    let forged = http
        .post(deployment.gateway_url(&format!("/v1/webhooks/{WEBHOOK_SOURCE}")))
        .header("x-run-token", "not-the-token")
        .json(&json!({"eventId": "forged"}))
        .send()
        .await;
    json_of(forged.map_err(|e| e.to_string())?, 401, "a webhook with a wrong token").await.map(drop)?;
    let event_id = format!("evt-{}", deployment.id);
    let hook = http
        .post(deployment.gateway_url(&format!("/v1/webhooks/{WEBHOOK_SOURCE}")))
        .header("x-run-token", WEBHOOK_TOKEN)
        .json(&json!({"eventId": event_id, "kind": "run.check"}))
        .send()
        .await;
    let hook = hook.map_err(|e| format!("webhook: {e}"))?;
    if hook.status().as_u16() != 202 {
        return Err(format!("webhook: {} (expected 202)", hook.status()));
    }
    eventually("webhook delivery", || {
        upstream.seen(|s| s.deliveries.iter().any(|(id, _)| id.as_deref() == Some(event_id.as_str())))
    })
    .await?;
    println!("5. a webhook was accepted and delivered through RabbitMQ (and a forged one refused)");
    Ok([email, password.to_owned(), access, refresh].into_iter().filter(|s| !s.is_empty()).collect())
}

/// The exported traces: the authenticated call is one trace from the gateway to the auth
/// service and on to the upstream, new and linked to the client's; every service exported
/// spans with its component; no exported text holds a credential, password, email or secret.
async fn check_traces(
    deployment: &Deployment,
    upstream: &Upstream,
    received: &crate::otlp::Received,
    sensitive: &[String],
) -> Result<(), String> {
    let mut call = None;
    eventually("the authenticated call's trace across the gateway and the auth service", || {
        let spans = received.spans();
        let request =
            spans.iter().find(|s| s.service == "portcullis-gateway" && s.links.iter().any(|l| l == CLIENT_TRACE));
        call = request.and_then(|request| {
            let validated = spans.iter().find(|s| {
                s.service == "portcullis-auth"
                    && s.trace_id == request.trace_id
                    && s.parent_span_id == request.span_id
                    && s.attribute("rpc.system") == Some("grpc")
            })?;
            Some((request.clone(), validated.clone()))
        });
        call.is_some()
    })
    .await?;
    let Some((request, validated)) = call else { return Err("no trace".to_owned()) };
    if request.trace_id == CLIENT_TRACE {
        return Err("the gateway continued an untrusted client's trace".to_owned());
    }
    let forwarded = upstream.seen(|s| s.traceparents.first().cloned()).unwrap_or_default();
    if forwarded.split('-').nth(1) != Some(request.trace_id.as_str()) {
        return Err(format!("the upstream got traceparent {forwarded}, not the gateway's trace {}", request.trace_id));
    }
    let components =
        [("portcullis-gateway", "gateway"), ("portcullis-auth", "auth"), ("portcullis-sockets", "sockets")];
    let spans = received.spans();
    for (service, component) in components {
        if !spans.iter().any(|s| s.service == service && s.attribute("portcullis.component") == Some(component)) {
            return Err(format!("{service} exported no span with portcullis.component = {component}"));
        }
    }
    let secrets = ["JWT_SECRET", "SERVICE_SECRET", "CONTEXT_SIGNING_SECRET"]
        .iter()
        .filter_map(|name| deployment.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
    let forbidden: Vec<String> = sensitive.iter().cloned().chain(secrets).chain([WEBHOOK_TOKEN.to_owned()]).collect();
    if let Some(leak) = leak(&spans, &forbidden) {
        return Err(leak);
    }
    println!(
        "7. {} spans exported (gateway over HTTP, auth and sockets over gRPC): the authenticated call is trace {} \
         from the gateway ({}) to the auth service ({}) and the upstream, linked to the client's untrusted trace; \
         no credential, password, email or secret in any of them",
        spans.len(),
        request.trace_id,
        request.name,
        validated.name
    );
    Ok(())
}

/// The first exported span holding one of `forbidden`, a JWT (service tokens included) or an
/// `Authorization` value, named (the secret itself is not repeated).
fn leak(spans: &[crate::otlp::Span], forbidden: &[String]) -> Option<String> {
    spans.iter().find_map(|span| {
        span.texts.iter().find_map(|text| {
            let item = forbidden.iter().position(|secret| text.contains(secret.as_str()));
            let leaked = item.is_some() || text.contains("eyJ") || text.to_ascii_lowercase().contains("bearer ");
            leaked.then(|| {
                format!(
                    "{}'s span {:?} exports a credential, password, email or secret (item {item:?})",
                    span.service, span.name
                )
            })
        })
    })
}

/// The metric names a Prometheus text scrape carries: `# TYPE` families and sample names.
fn scraped_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            names.extend(family.split_whitespace().next().map(str::to_owned));
        } else if !line.starts_with('#') {
            names.extend(line.split(['{', ' ']).next().filter(|n| !n.is_empty()).map(str::to_owned));
        }
    }
    names
}

/// Every series the dashboard and the alerts read appears in a scrape of the services.
async fn check_scrapes(root: &Path, deployment: &Deployment) -> Result<(), String> {
    let watched = crate::monitoring::watched_series(root)?;
    let mut scraped = BTreeSet::new();
    for addr in [deployment.auth, deployment.gateway, deployment.socket] {
        let text = reqwest::get(format!("http://{addr}/metrics")).await.map_err(|e| format!("scrape {addr}: {e}"))?;
        scraped.extend(scraped_names(&text.text().await.map_err(|e| e.to_string())?));
    }
    let missing: Vec<_> = watched.difference(&scraped).collect();
    if !missing.is_empty() {
        return Err(format!(
            "the dashboard or the alerts read series no service exposes after the scenario: {missing:?}"
        ));
    }
    println!("6. every one of the {} series the dashboard and the alerts read is in a real scrape", watched.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_and_urls_read_as_they_should() {
        let scrape = "# HELP a_total x\n# TYPE a_total counter\na_total{x=\"1\"} 2\nb_bucket{le=\"1\"} 1\nc 3\n";
        assert_eq!(scraped_names(scrape), BTreeSet::from(["a_total".into(), "b_bucket".into(), "c".into()]));
        assert_eq!(with_database("postgres://u@h:5432/postgres", "d"), "postgres://u@h:5432/d");
        assert_eq!(with_database("postgres://u@h/postgres?sslmode=disable", "d"), "postgres://u@h/d?sslmode=disable");
        assert_eq!(random_hex(4).len(), 8);
    }

    #[test]
    fn a_secret_anywhere_in_a_span_is_a_leak() {
        let span = |texts: &[&str]| crate::otlp::Span {
            service: "portcullis-auth".to_owned(),
            name: "request".to_owned(),
            trace_id: String::new(),
            span_id: String::new(),
            parent_span_id: String::new(),
            links: Vec::new(),
            attributes: Vec::new(),
            texts: texts.iter().map(|t| (*t).to_owned()).collect(),
        };
        let forbidden = vec!["a@example.com".to_owned(), "hunter2-hunter2".to_owned()];
        assert_eq!(leak(&[span(&["request", "http.route", "/login"])], &forbidden), None);
        for bad in ["to a@example.com", "pw hunter2-hunter2!", "eyJhbGciOi.x.y", "Bearer pcr_x"] {
            let found = leak(&[span(&["request"]), span(&["k", bad])], &forbidden);
            assert!(found.is_some_and(|m| !m.contains(bad)), "{bad}");
        }
    }
}
