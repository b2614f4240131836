//! Start-up and serving: [`start`] connects what the gateway runs on (the auth service's
//! client and its cache invalidation, the CORS origin list, rate-limit storage) and
//! [`router`] hands every request to the pipeline (SPEC §6's stages in order); [`run`] serves
//! until shutdown.
//! The `gateway` binary, the all-in-one binary and the tests all go through these.

use std::{future::Future, sync::Arc, time::Duration};

use auth_contract::{AuthClient, ClientConfig};
use futures::StreamExt;
use platform::bus::BusMessage;
use tokio::net::TcpListener;

use crate::{
    config::GatewayConfig,
    http,
    metrics::Metrics,
    pipeline,
    proxy::Proxy,
    ratelimit::RateLimiter,
    state::{CorsOrigins, Gateway, GatewayDeps, Inner},
    webhooks::{WebhookDeps, Webhooks},
};

/// How often the client-origin list is fetched again while the auth service cannot answer.
const ORIGINS_RETRY: Duration = Duration::from_secs(2);

/// Builds the gateway and starts its background work: revocation events clear the credential
/// cache, and `auth:client.*` events (or a bus reconnect) refresh the CORS origin list.
pub async fn start(config: GatewayConfig, deps: GatewayDeps) -> Result<Gateway, String> {
    use secrecy::ExposeSecret as _;
    refuse_tls_upstreams(&config)?;
    let client_config = ClientConfig::new(
        config.auth_service_url.to_string(),
        "gateway",
        secrecy::SecretString::from(config.service_secret.expose_secret().to_owned()),
    );
    let auth = AuthClient::new(client_config).map_err(|e| format!("auth client: {e}"))?;
    auth.follow(deps.bus.clone()).await.map_err(|e| format!("cannot follow auth events: {e}"))?;
    let redis_limits = deps.redis.clone().map(|pool| (pool, config.redis_key_prefix.clone()));
    let limiter = RateLimiter::new(redis_limits, config.rate_limit_mode);
    let webhooks = Webhooks::start_with_broker(
        &config.routes.webhooks,
        WebhookDeps {
            redis: deps.redis.clone(),
            key_prefix: config.redis_key_prefix.clone(),
            spool_dir: config.data_dir.join(crate::webhooks::SPOOL_DIR),
            limiter: limiter.clone(),
        },
        config.amqp.clone(),
    )
    .await?;
    let shared_failures = deps.redis.clone().map(|pool| {
        let counters = platform::counters::RedisCounters::new(pool, format!("{}gw:", config.redis_key_prefix));
        Arc::new(counters) as Arc<dyn platform::counters::Counters>
    });
    let gateway = Gateway::new(Inner {
        auth_failures: platform::counters::FailureGuard::new(shared_failures, config.auth_failure_limit),
        webhooks,
        context_key: Gateway::context_key_from(&config),
        routes: config.routes.routes.clone().with_ticket_route(&config.socket_service_url),
        cors: CorsOrigins::new(config.cors_origins.iter().map(|o| o.as_str().to_owned())),
        config,
        auth,
        proxy: Proxy::new(),
        limiter,
        metrics: Metrics::new(),
        deps,
    });
    follow_client_origins(gateway.clone()).await?;
    Ok(gateway)
}

/// The proxy speaks plain HTTP to upstreams (they sit on the private network behind the
/// edge); an `https://` upstream could never be reached, so it stops start-up instead.
fn refuse_tls_upstreams(config: &GatewayConfig) -> Result<(), String> {
    let named = [("AUTH_HTTP_URL", &config.auth_http_url), ("SOCKET_SERVICE_URL", &config.socket_service_url)];
    for (variable, upstream) in named {
        if upstream.is_https() {
            return Err(format!("{variable}: https upstreams are not supported; use http on the private network"));
        }
    }
    for route in config.routes.routes.iter() {
        if route.upstream.is_https() {
            return Err(format!(
                "GATEWAY_CONFIG: route `{}` (line {}): https upstreams are not supported; use http on the private network",
                route.prefix, route.line
            ));
        }
    }
    Ok(())
}

async fn refresh_origins(gateway: &Gateway) -> bool {
    match gateway.auth.list_allowed_origins().await {
        Ok(origins) => {
            gateway.cors.replace_clients(&origins);
            true
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot fetch client origins; preflights use CORS_ORIGIN only for now");
            false
        }
    }
}

async fn follow_client_origins(gateway: Gateway) -> Result<(), String> {
    let mut events = gateway
        .deps
        .bus
        .subscribe(&[auth_contract::events::CLIENTS])
        .await
        .map_err(|e| format!("cannot follow client events: {e}"))?;
    tokio::spawn(async move {
        let mut stale = !refresh_origins(&gateway).await;
        loop {
            let next = if stale {
                match tokio::time::timeout(ORIGINS_RETRY, events.next()).await {
                    Ok(message) => message,
                    Err(_) => {
                        stale = !refresh_origins(&gateway).await;
                        continue;
                    }
                }
            } else {
                events.next().await
            };
            match next {
                Some(BusMessage::Event(_) | BusMessage::Resubscribed) => stale = !refresh_origins(&gateway).await,
                None => break,
            }
        }
    });
    Ok(())
}

/// The whole HTTP surface: every request goes through the pipeline, which serves the
/// built-in routes through `http::router` and proxies the rest. (Unit tests call it as a
/// `Router`; [`run`] serves [`service`], the same pipeline without a router in front.)
#[cfg(test)]
pub(crate) fn router(gateway: Gateway) -> axum::Router {
    let built_in = http::router(gateway.clone());
    axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (gateway, built_in) = (gateway.clone(), built_in.clone());
        async move { pipeline::handle(&gateway, &built_in, request).await }
    })
}

/// Every request handed to the pipeline: one future per request, held in its connection's
/// task rather than boxed, with no route table to consult first.
pub fn service(
    gateway: Gateway,
) -> impl tower::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    let built_in = http::router(gateway.clone());
    tower::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let (gateway, built_in) = (gateway.clone(), built_in.clone());
        async move { Ok(pipeline::handle(&gateway, &built_in, request.map(axum::body::Body::new)).await) }
    })
}

/// [`run`] on `GatewayConfig::edge_threads` threads of the edge's own, each with a
/// single-threaded runtime: a connection, its requests and their upstream connections stay on
/// one thread (`platform::serve::serve_per_thread`). Background work (event subscriptions,
/// webhook workers, the auth service's channel) stays on the caller's runtime.
pub async fn run_on_threads(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (limits, threads) = (gateway.config.listener, gateway.config.edge_threads);
    let make = || service(gateway.clone());
    let served = platform::serve::serve_per_thread(listener, make, limits, threads, shutdown).await;
    gateway.webhooks.stop();
    served
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = service(gateway.clone());
    let served = platform::serve::serve_service(listener, app, gateway.config.listener, shutdown).await;
    gateway.webhooks.stop();
    served
}

/// A gateway for unit tests: the given routes file, an auth service address nothing answers
/// on (so only layers that do not authenticate can be exercised), the in-process bus.
#[cfg(test)]
#[allow(clippy::expect_used)]
pub(crate) async fn test_gateway(routes: &str) -> Gateway {
    use platform::{bus::MemoryBus, env::MapEnv};

    use crate::config::{Mode, routes::RoutesFile};
    let secret = || Some(secrecy::SecretString::from("s".repeat(32)));
    let overrides = crate::SecretOverrides { service_secret: secret(), context_signing_secret: secret() };
    let dir = std::env::temp_dir().join(format!("pc-gw-unit-{}", uuid::Uuid::new_v4().simple()));
    let env =
        MapEnv::new([("AUTH_SERVICE_URL", "http://127.0.0.1:9"), ("DATA_DIR", dir.to_str().expect("utf-8 temp dir"))]);
    let mut config = GatewayConfig::from_env_with(&env, Mode::Embedded, overrides).expect("config");
    config.routes = RoutesFile::parse(routes).expect("routes");
    start(
        config,
        GatewayDeps { bus: Arc::new(MemoryBus::default()), redis: None, clock: Arc::new(platform::clock::SystemClock) },
    )
    .await
    .expect("gateway")
}
