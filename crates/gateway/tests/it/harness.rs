//! A whole stack on port 0: a real auth service (`testkit`), a gateway in front of it, and an
//! echo upstream that checks the signed context with `VerifiedContext` (the way a team's own
//! service would) and reports what it saw.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use auth_contract::{extract::VerifiedContext, headers::ContextKey};
use axum::{Json, Router, extract::Request, http::HeaderMap, routing::any};
use gateway::{GatewayConfig, GatewayDeps, Mode, SecretOverrides};
use platform::env::MapEnv;
use serde_json::{Value, json};
use testkit::{Backend, CONTEXT_SECRET, SERVICE_SECRET, TestApp, spawn_auth_with};
use tokio::sync::oneshot;

/// Headers of every request the upstream received.
pub type Seen = Arc<Mutex<Vec<HeaderMap>>>;

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Seen,
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// What a downstream service behind the gateway looks like: one extractor, no token code.
async fn verified(VerifiedContext(ctx): VerifiedContext) -> Json<Value> {
    Json(json!({
        "kind": ctx.kind.as_str(),
        "subject": ctx.subject,
        "user_id": ctx.user_id,
        "tenant_id": ctx.tenant_id,
        "client_id": ctx.client_id,
        "session_id": ctx.session_id,
        "scopes": ctx.scopes.to_vec(),
        "role": ctx.role,
    }))
}

async fn public(request: Request) -> Json<Value> {
    let names: Vec<&str> = request.headers().keys().map(http::HeaderName::as_str).collect();
    Json(json!({"path": request.uri().to_string(), "headers": names}))
}

pub async fn spawn_upstream() -> Upstream {
    spawn_upstream_at("127.0.0.1:0".parse().unwrap()).await
}

/// The echo upstream on a chosen address (to bring a "down" upstream back on its port).
pub async fn spawn_upstream_at(addr: SocketAddr) -> Upstream {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = Router::new()
        .route("/v1/user/{*rest}", any(verified))
        .route("/v1/sdk/{*rest}", any(verified))
        .route("/v1/partner/{*rest}", any(verified))
        .route("/ticket", any(verified))
        .route("/v1/open/{*rest}", any(public))
        .with_state(ContextKey::new(CONTEXT_SECRET))
        .layer(axum::middleware::from_fn(move |request: Request, next: axum::middleware::Next| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(request.headers().clone());
                next.run(request).await
            }
        }));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Upstream { addr, seen, _stop: tx }
}

/// The routes most tests use, all to `upstream`.
pub fn standard_routes(upstream: &str) -> String {
    format!(
        r#"
[[routes]]
prefix = "/v1/user/orders"
upstream = "{upstream}"
scopes = ["orders:read"]

[[routes]]
prefix = "/v1/user/profile"
upstream = "{upstream}"

[[routes]]
prefix = "/v1/user/upload"
upstream = "{upstream}"
max_body = "1KiB"

[[routes]]
prefix = "/v1/user/admin"
upstream = "{upstream}"
roles = ["admin"]

[[routes]]
prefix = "/v1/sdk/chat"
upstream = "{upstream}"

[[routes]]
prefix = "/v1/partner"
upstream = "{upstream}"
auth = ["api_key"]

[[routes]]
prefix = "/v1/open"
upstream = "{upstream}"
auth = ["none"]
rate_limit = "3/minute"
"#
    )
}

pub struct Gw {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A gateway in front of `auth` with this routes file and extra environment; in the
/// PostgreSQL + Redis variant it shares the auth service's Redis (bus, limits, prefix).
pub async fn spawn_gateway(auth: &TestApp, routes: &str, vars: &[(&str, &str)]) -> Gw {
    let redis = match &auth.redis {
        Some((url, _)) => Some(platform::redis::connect(url).await.expect("redis reachable")),
        None => None,
    };
    spawn_gateway_on(auth, routes, vars, redis).await
}

/// A gateway whose Redis pool points at a closed port, as if Redis had gone away.
pub async fn spawn_gateway_with_dead_redis(auth: &TestApp, routes: &str) -> Gw {
    let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:1")
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    spawn_gateway_on(auth, routes, &[], Some(pool)).await
}

async fn spawn_gateway_on(
    auth: &TestApp,
    routes: &str,
    vars: &[(&str, &str)],
    redis: Option<deadpool_redis::Pool>,
) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let routes_file = dir.path().join("gateway.toml");
    std::fs::write(&routes_file, routes).unwrap();
    let mut env = MapEnv::new([
        ("AUTH_SERVICE_URL", auth.grpc.clone()),
        ("AUTH_HTTP_URL", auth.root.clone()),
        ("GATEWAY_PORT", "0".to_owned()),
        ("GATEWAY_CONFIG", routes_file.to_string_lossy().into_owned()),
        ("DATA_DIR", dir.path().to_string_lossy().into_owned()),
    ]);
    if let Some((url, prefix)) = &auth.redis {
        env.set("REDIS_URL", url.clone());
        env.set("REDIS_KEY_PREFIX", prefix.clone());
    }
    for (k, v) in vars {
        env.set(*k, *v);
    }
    let overrides = SecretOverrides {
        service_secret: Some(SERVICE_SECRET.to_owned().into()),
        context_signing_secret: Some(CONTEXT_SECRET.to_owned().into()),
    };
    let config = GatewayConfig::from_env_with(&env, Mode::Embedded, overrides).expect("gateway config");
    let gateway = gateway::start(
        config,
        GatewayDeps { bus: auth.bus.clone(), redis, clock: Arc::new(platform::clock::SystemClock) },
    )
    .await
    .expect("gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    // The standalone binary's way: the edge on threads of its own.
    tokio::spawn(gateway::run_on_threads(gateway.clone(), listener, async move {
        let _ = rx.await;
    }));
    Gw { url, stop: Some(tx), _dir: dir }
}

/// An auth service with a short service-token check and the stack's usual settings.
pub async fn spawn_auth(backend: Backend) -> TestApp {
    spawn_auth_with(backend, &[]).await
}

impl Gw {
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}
