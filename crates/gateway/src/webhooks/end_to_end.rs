//! Webhook ingestion end to end: [`router`] on port 0 in front of a recording test
//! upstream, on the spool + in-memory backend always, on Redis when `REDIS_URL` is set and
//! with the outbox on RabbitMQ when `AMQP_URL` is set (both required in CI, through
//! `testkit`).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use super::{AmqpSettings, RetryPolicy, WebhookDeps, WebhookOptions, Webhooks, amqp::AmqpOutbox, router};
use crate::{
    config::routes::{RoutesFile, Webhook},
    pipeline::ClientIp,
};
use axum::{Router, body::Bytes, extract::State, http::HeaderMap};
use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::Sha256;

const STANDARD_KEY: &[u8] = b"integration-standard-key-32bytes";
const META_SECRET: &str = "meta-app-secret";
const VERIFY_TOKEN: &str = "meta-verify-token";

// ---- backends ----

/// Where a test's outbox and replay guard live; cloning keeps the same spool dir or prefix,
/// which is how a restart is simulated.
#[derive(Clone)]
struct Store {
    redis: Option<deadpool_redis::Pool>,
    /// The outbox on RabbitMQ (the replay guard then stays in memory).
    amqp: Option<AmqpSettings>,
    prefix: String,
    spool: PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

impl Store {
    fn spool() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self { redis: None, amqp: None, prefix: String::new(), spool: dir.path().join("spool"), _dir: Arc::new(dir) }
    }

    /// `None` outside CI when RabbitMQ is not configured; a panic in CI.
    fn amqp() -> Option<Self> {
        let url = testkit::amqp_url()?;
        let settings = AmqpSettings {
            url: secrecy::SecretString::from(url),
            queue_prefix: format!("pc_test.{}.", uuid::Uuid::new_v4().simple()),
            max_length: super::amqp::DEFAULT_MAX_LENGTH,
        };
        Some(Self { amqp: Some(settings), ..Self::spool() })
    }

    /// Deletes the RabbitMQ queues a test declared.
    async fn clean(&self) {
        if let Some(settings) = &self.amqp {
            let admin = AmqpOutbox::new(settings, super::amqp::AmqpIndex::Spool(self.spool.clone()));
            for source in ["billing", "meta", "acme", "chat", "whatsapp"] {
                admin.delete_queues(source).await.unwrap();
            }
        }
    }

    /// `None` outside CI when Redis is not configured; a panic in CI.
    async fn redis() -> Option<Self> {
        let testkit::Backend::Postgres { redis_url, .. } = testkit::Backend::shared()? else { return None };
        let pool = platform::redis::connect(&redis_url)
            .await
            .unwrap_or_else(|e| panic!("REDIS_URL is set but Redis is unreachable: {e}"));
        let dir = tempfile::tempdir().unwrap();
        Some(Self {
            redis: Some(pool),
            amqp: None,
            prefix: format!("pc_test:{}:", uuid::Uuid::new_v4().simple()),
            spool: dir.path().join("unused"),
            _dir: Arc::new(dir),
        })
    }

    fn deps(&self) -> WebhookDeps {
        WebhookDeps {
            redis: self.redis.clone(),
            key_prefix: self.prefix.clone(),
            spool_dir: self.spool.clone(),
            limiter: crate::ratelimit::RateLimiter::new(None, crate::domain::LimitMode::Exact),
        }
    }
}

/// One test per backend for each `async fn(Store)`.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod spool {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Store::spool()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(store) = super::Store::redis().await {
                        super::$name(store).await;
                    }
                }
            )*
        }
        mod amqp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(store) = super::Store::amqp() {
                        use futures::FutureExt as _;
                        let outcome = std::panic::AssertUnwindSafe(super::$name(store.clone())).catch_unwind().await;
                        store.clean().await;
                        if let Err(panic) = outcome {
                            std::panic::resume_unwind(panic);
                        }
                    }
                }
            )*
        }
    };
}

on_every_store!(
    one_keys_events_arrive_in_order_while_other_keys_pass,
    attempts_run_out_into_the_dead_letters_and_a_replay_delivers,
    signed_event_reaches_the_upstream_exactly_once,
    bad_signatures_are_refused_and_not_forwarded,
    upstream_down_then_up_receives_the_event,
    restart_delivers_what_was_pending,
    refused_event_is_set_aside_and_the_queue_moves_on,
    schema_failures_are_refused_with_422_and_leave_no_replay_mark,
    schema_failures_go_to_the_dead_letters_undelivered,
);

// ---- the test upstream ----

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// What the upstream answered.
    status: u16,
}

/// Records every request and answers with `status` (200 unless a test changes it), or 503
/// to a body containing one of the `failing` markers.
#[derive(Clone)]
struct TestUpstream {
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    failing: Arc<Mutex<Vec<String>>>,
    /// Every request waits for this before it is answered; a test holding it holds them.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Requests read, answered or not.
    arrived: Arc<std::sync::atomic::AtomicUsize>,
}

impl TestUpstream {
    fn new() -> Self {
        Self {
            received: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            failing: Arc::default(),
            gate: Arc::default(),
            arrived: Arc::default(),
        }
    }

    /// Answers 503 to every body containing `marker` until [`Self::heal`].
    fn fail_on(&self, marker: &str) {
        self.failing.lock().unwrap().push(marker.to_owned());
    }

    fn heal(&self) {
        self.failing.lock().unwrap().clear();
    }

    /// The bodies answered with a 2xx, in the order they came.
    fn delivered(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| (200..300).contains(&r.status)).collect()
    }

    async fn wait_delivered(&self, count: usize) -> Vec<Received> {
        self.wait_until(count, Self::delivered).await
    }

    /// `read` once it holds `count` requests, else what it holds after 20 s.
    async fn wait_until(&self, count: usize, read: fn(&Self) -> Vec<Received>) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = read(self);
            if got.len() >= count || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .fallback(|State(up): State<TestUpstream>, request: axum::extract::Request| async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                up.arrived.fetch_add(1, Ordering::SeqCst);
                drop(up.gate.lock().await);
                let text = String::from_utf8_lossy(&body).into_owned();
                let failing = up.failing.lock().unwrap().iter().any(|marker| text.contains(marker.as_str()));
                let status = if failing { 503 } else { up.status.load(Ordering::SeqCst) };
                up.received.lock().unwrap().push(Received {
                    path: parts.uri.path().to_owned(),
                    headers: parts.headers,
                    body,
                    status,
                });
                axum::http::StatusCode::from_u16(status).unwrap()
            })
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }

    async fn start() -> (Self, u16) {
        let upstream = Self::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        upstream.serve(listener).await;
        (upstream, port)
    }

    /// Brings the upstream up on a port chosen earlier.
    async fn start_on(port: u16) -> Self {
        let upstream = Self::new();
        upstream.serve(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap()).await;
        upstream
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<Received> {
        self.wait_until(count, Self::received).await
    }
}

/// A port with nothing listening on it (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---- the gateway side ----

/// A compressed retry schedule: 30 waits of 50–200 ms, about 5.5 s before the dead letters.
const FAST_RETRY: &str = r#"retry = ["50ms", "100ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms", "200ms"]"#;

/// The sources most tests use: the sender's bytes delivered as they came (`raw`), retried on
/// [`FAST_RETRY`]; `extra` adds tables or keys to the last one.
fn hooks(upstream_port: u16, extra: &str) -> BTreeMap<String, Webhook> {
    let toml = format!(
        r#"
[webhooks.billing]
profile = "standard"
secrets = ["whsec_{standard}"]
upstream = "http://127.0.0.1:{upstream_port}/hooks/billing"
tolerance = "5m"
envelope = "raw"
{FAST_RETRY}

[webhooks.meta]
profile = "meta"
secrets = ["{META_SECRET}"]
verify_token = "{VERIFY_TOKEN}"
upstream = "http://127.0.0.1:{upstream_port}/hooks/meta"
envelope = "raw"
{FAST_RETRY}

[webhooks.acme]
profile = "generic"
secrets = ["acme-secret"]
header = "x-acme-signature"
encoding = "base64"
upstream = "http://127.0.0.1:{upstream_port}"
envelope = "raw"
{FAST_RETRY}
{extra}
"#,
        standard = B64.encode(STANDARD_KEY),
    );
    RoutesFile::parse(&toml).unwrap().webhooks
}

fn options() -> WebhookOptions {
    WebhookOptions {
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            attempt_timeout: Duration::from_secs(2),
            poll_interval: Duration::from_millis(100),
        },
        ..WebhookOptions::default()
    }
}

struct Gateway {
    base: String,
    webhooks: Arc<Webhooks>,
    http: reqwest::Client,
}

impl Gateway {
    async fn start(store: &Store, hooks: &BTreeMap<String, Webhook>) -> Self {
        Self::start_with(store, hooks, |r| r).await
    }

    async fn start_with(store: &Store, hooks: &BTreeMap<String, Webhook>, wrap: impl FnOnce(Router) -> Router) -> Self {
        let webhooks = Webhooks::launch(hooks, store.deps(), store.amqp.clone(), options()).await.unwrap();
        let app = wrap(router(webhooks.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap()
        });
        Self { base: format!("http://{addr}/v1/webhooks"), webhooks, http: reqwest::Client::new() }
    }

    async fn post(&self, source: &str, headers: &[(&str, String)], body: &'static [u8]) -> (StatusCode, Value) {
        let (status, _, answer) = self.post_owned(source, headers, body.to_vec()).await;
        (status, answer)
    }

    /// A counter or gauge of the pipeline's metrics with all of `labels`; 0 when absent.
    fn metric(&self, name: &str, labels: &[&str]) -> u64 {
        use prometheus::Encoder as _;
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&self.webhooks.metric_families(now()), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        text.lines()
            .filter(|line| line.starts_with(&format!("{name}{{")) && labels.iter().all(|l| line.contains(l)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|value| value as u64)
            .sum()
    }

    /// [`Self::metric`] once it reads `expected`, or after 5 s: a delivery is counted just
    /// after the upstream answers it, so a test that saw the delivery may look a moment early.
    async fn wait_metric(&self, name: &str, labels: &[&str], expected: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let value = self.metric(name, labels);
            if value == expected || Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_pending(&self, source: &str, expected: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let pending = self.webhooks.pending(source).await.unwrap();
            if pending == expected || Instant::now() > deadline {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.webhooks.stop();
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn standard_headers(id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let ts = now().to_string();
    let sig = B64.encode(mac(STANDARD_KEY, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]));
    vec![("webhook-id", id.to_owned()), ("webhook-timestamp", ts), ("webhook-signature", format!("v1,{sig}"))]
}

fn meta_headers(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![("x-hub-signature-256", format!("sha256={}", hex::encode(mac(META_SECRET.as_bytes(), &[body]))))]
}

fn acme_headers(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![("x-acme-signature", B64.encode(mac(b"acme-secret", &[body])))]
}

const EVENT: &[u8] = br#"{"type":"invoice.paid","amount":4200}"#;

/// POSTs with one extra header line and the given body pieces, ignoring write errors (the
/// server may answer and close first); returns the start of the raw response.
async fn raw_post(base: &str, source: &str, header: &str, pieces: &[Vec<u8>]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let authority = base.trim_start_matches("http://").split('/').next().unwrap();
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let head = format!("POST /v1/webhooks/{source} HTTP/1.1\r\nhost: {authority}\r\n{header}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    for piece in pieces {
        if stream.write_all(piece).await.is_err() {
            break;
        }
    }
    let mut response = vec![0; 4096];
    let mut read = 0;
    while read < response.len() {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut response[read..])).await {
            Ok(Ok(0) | Err(_)) | Err(_) => break,
            Ok(Ok(n)) => read += n,
        }
        if response[..read].ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&response[..read]).into_owned()
}

fn assert_problem(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], code, "{body}");
}

// ---- the tests ----

async fn signed_event_reaches_the_upstream_exactly_once(store: Store) {
    let (upstream, port) = TestUpstream::start().await;
    let gw = Gateway::start(&store, &hooks(port, "")).await;

    let headers = standard_headers("msg_once", EVENT);
    let (status, body) = gw.post("billing", &headers, EVENT).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, serde_json::json!({"accepted": true, "id": "msg_once"}));

    let received = upstream.wait_for(1).await;
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.path, "/hooks/billing");
    assert_eq!(got.body.as_ref(), EVENT);
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["webhook-id"], "msg_once");
    assert_eq!(got.headers["x-webhook-source"], "billing");
    assert_eq!(got.headers["webhook-signature"], headers[2].1.as_str(), "the upstream may verify again");
    assert_eq!(gw.wait_pending("billing", 0).await, 0);

    // The same delivery again, byte for byte, is a replay.
    let (status, body) = gw.post("billing", &headers, EVENT).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "signature_invalid");
    // Re-signed with a fresh timestamp, the id still identifies it.
    let (status, body) = gw.post("billing", &standard_headers("msg_once", EVENT), EVENT).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "signature_invalid");

    // Meta and generic replays are recognised by their signature; each first delivery gets
    // its own id.
    let (status, meta) = gw.post("meta", &meta_headers(EVENT), EVENT).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{meta}");
    let (status, body) = gw.post("meta", &meta_headers(EVENT), EVENT).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "signature_invalid");
    let (status, acme) = gw.post("acme", &acme_headers(EVENT), EVENT).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{acme}");
    assert_ne!(meta["id"], acme["id"]);

    let received = upstream.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received_later = upstream.received();
    assert_eq!(received_later.len(), 3, "each event once: {received:?}");
    let meta_got = received_later.iter().find(|r| r.path == "/hooks/meta").unwrap();
    assert_eq!(meta_got.headers["webhook-id"], meta["id"].as_str().unwrap());
    assert!(meta_got.headers.contains_key("x-hub-signature-256"));
    let acme_got = received_later.iter().find(|r| r.path == "/").unwrap();
    assert_eq!(acme_got.headers["x-webhook-source"], "acme");
}

async fn bad_signatures_are_refused_and_not_forwarded(store: Store) {
    let (upstream, port) = TestUpstream::start().await;
    let gw = Gateway::start(&store, &hooks(port, "")).await;

    let mut wrong = standard_headers("msg_bad", EVENT);
    wrong[2].1 = format!("v1,{}", B64.encode(mac(b"not-the-key", &[b"msg_bad"])));
    let stale_ts = (now() - 3600).to_string();
    let stale_sig = B64.encode(mac(STANDARD_KEY, &[b"msg_old.", stale_ts.as_bytes(), b".", EVENT]));
    let stale = vec![
        ("webhook-id", "msg_old".to_owned()),
        ("webhook-timestamp", stale_ts),
        ("webhook-signature", format!("v1,{stale_sig}")),
    ];
    // (source, headers, body, status, code)
    type Case = (&'static str, Vec<(&'static str, String)>, &'static [u8], StatusCode, &'static str);
    let cases: Vec<Case> = vec![
        ("billing", wrong, EVENT, StatusCode::UNAUTHORIZED, "signature_invalid"),
        ("billing", vec![], EVENT, StatusCode::UNAUTHORIZED, "signature_invalid"),
        ("billing", stale, EVENT, StatusCode::UNAUTHORIZED, "signature_invalid"),
        (
            "billing",
            standard_headers("msg_tampered", EVENT),
            b"{\"amount\":1}",
            StatusCode::UNAUTHORIZED,
            "signature_invalid",
        ),
        (
            "billing",
            vec![("webhook-signature", "garbage".to_owned())],
            EVENT,
            StatusCode::UNAUTHORIZED,
            "signature_invalid",
        ),
        ("meta", meta_headers(b"other body"), EVENT, StatusCode::UNAUTHORIZED, "signature_invalid"),
        (
            "meta",
            vec![("x-hub-signature-256", "sha256=nothex".to_owned())],
            EVENT,
            StatusCode::UNAUTHORIZED,
            "signature_invalid",
        ),
        ("acme", vec![("x-acme-signature", "%%%".to_owned())], EVENT, StatusCode::UNAUTHORIZED, "signature_invalid"),
        ("nobody", meta_headers(EVENT), EVENT, StatusCode::NOT_FOUND, "not_found"),
    ];
    for (source, headers, body, expected, code) in cases {
        let (status, problem) = gw.post(source, &headers, body).await;
        assert_problem(status, &problem, expected, code);
    }

    // Over 1 MiB: 413, declared or streamed.
    let big = vec![b'x'; (1 << 20) + 1];
    // Raw HTTP, since the gateway answers before the body is sent and a client still writing
    // it may see the connection close instead of the answer.
    let declared = raw_post(&gw.base, "meta", &format!("content-length: {}", big.len()), &[]).await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    let mut chunked = Vec::new();
    for chunk in big.chunks(64 * 1024) {
        chunked.push([format!("{:x}\r\n", chunk.len()).into_bytes(), chunk.to_vec(), b"\r\n".to_vec()].concat());
    }
    chunked.push(b"0\r\n\r\n".to_vec());
    let streamed = raw_post(&gw.base, "meta", "transfer-encoding: chunked", &chunked).await;
    assert!(streamed.starts_with("HTTP/1.1 413"), "{streamed}");
    assert!(streamed.contains("body_too_large"), "{streamed}");

    // Each refusal counted by source and reason; nothing stored.
    assert_eq!(
        gw.metric("gateway_webhook_events_refused_total", &["reason=\"signature_invalid\"", "source=\"meta\""]),
        2
    );
    assert_eq!(gw.metric("gateway_webhook_events_refused_total", &["reason=\"body_too_large\"", "source=\"meta\""]), 2);
    assert_eq!(gw.metric("gateway_webhook_events_received_total", &["source=\"meta\""]), 4);
    assert_eq!(gw.metric("gateway_webhook_events_stored_total", &["source=\"meta\""]), 0);

    // Other methods: a problem, not axum's plain text.
    let response = gw.http.put(format!("{}/meta", gw.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["content-type"], "application/problem+json");

    for source in ["billing", "meta", "acme"] {
        assert_eq!(gw.webhooks.pending(source).await.unwrap(), 0);
    }
    assert!(gw.webhooks.pending("nobody").await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(upstream.received().is_empty(), "nothing refused is forwarded");

    // A refused delivery left no replay mark: the genuine one still passes.
    let (status, body) = gw.post("billing", &standard_headers("msg_bad", EVENT), EVENT).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(upstream.wait_for(1).await.len(), 1);
}

async fn upstream_down_then_up_receives_the_event(store: Store) {
    let port = free_port();
    let gw = Gateway::start(&store, &hooks(port, "")).await;

    let (status, body) = gw.post("billing", &standard_headers("msg_down", EVENT), EVENT).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = gw.post("meta", &meta_headers(EVENT), EVENT).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // Several attempts fail while nothing listens.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.webhooks.pending("billing").await.unwrap(), 1);
    assert_eq!(gw.webhooks.pending("meta").await.unwrap(), 1);

    let upstream = TestUpstream::start_on(port).await;
    let received = upstream.wait_for(2).await;
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received.iter().any(|r| r.headers["webhook-id"] == "msg_down" && r.body.as_ref() == EVENT));
    assert_eq!(gw.wait_pending("billing", 0).await, 0);
    assert_eq!(gw.wait_pending("meta", 0).await, 0);

    // An upstream answering 503 is down too: retried until it recovers.
    upstream.status.store(503, Ordering::SeqCst);
    let (status, _) = gw.post("billing", &standard_headers("msg_503", EVENT), EVENT).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let attempts = upstream.wait_for(4).await;
    assert!(attempts.len() >= 4, "retried: {}", attempts.len());
    assert_eq!(gw.webhooks.pending("billing").await.unwrap(), 1);
    upstream.status.store(200, Ordering::SeqCst);
    assert_eq!(gw.wait_pending("billing", 0).await, 0);
    let last = upstream.received().pop().unwrap();
    assert_eq!(last.headers["webhook-id"], "msg_503");
}

async fn restart_delivers_what_was_pending(store: Store) {
    let port = free_port();
    let hooks = hooks(port, "");
    let first = Gateway::start(&store, &hooks).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, body) = first.post("billing", &standard_headers(&format!("msg_r{i}"), EVENT), EVENT).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.push(format!("msg_r{i}"));
    }
    let (status, _) = first.post("acme", &acme_headers(EVENT), EVENT).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.webhooks.stop();
    drop(first);

    let upstream = TestUpstream::start_on(port).await;
    // Stopped: nothing is delivered until the ingestion starts again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(upstream.received().is_empty());

    let second = Gateway::start(&store, &hooks).await;
    let received = upstream.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received_later = upstream.received();
    // The first instance failed and deferred each event until it stopped. On RabbitMQ a
    // deferral is a publish of the event to a delay queue, then the original's ack: a stop
    // between the two leaves both, and the event is delivered twice (at least once). The
    // other stores move an event in one step.
    let at_most = if store.amqp.is_some() { 8 } else { 4 };
    assert!((4..=at_most).contains(&received_later.len()), "{received:?}");
    let mut billing: Vec<_> = received_later
        .iter()
        .filter(|r| r.path == "/hooks/billing")
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned())
        .collect();
    // Unordered events (the source has no ordering key) go out in parallel.
    billing.sort();
    billing.dedup();
    assert_eq!(billing, ids, "each delivered");
    assert_eq!(second.wait_pending("billing", 0).await, 0);
    assert_eq!(second.wait_pending("acme", 0).await, 0);
}

/// A generic source ordered by the body's `/conversation`.
const CHAT_SOURCE: &str = r#"
[webhooks.chat]
profile = "generic"
secrets = ["acme-secret"]
header = "x-acme-signature"
encoding = "base64"
upstream = "http://127.0.0.1:PORT/hooks/chat"
ordering_key = "/conversation"
envelope = "raw"
concurrency = 4
"#;

fn chat_event(conversation: &str, n: u32) -> Vec<u8> {
    format!(r#"{{"conversation":"{conversation}","n":{n}}}"#).into_bytes()
}

fn conversation_of(received: &Received) -> (String, u64) {
    let body: Value = serde_json::from_slice(&received.body).unwrap();
    (body["conversation"].as_str().unwrap().to_owned(), body["n"].as_u64().unwrap())
}

async fn one_keys_events_arrive_in_order_while_other_keys_pass(store: Store) {
    let (upstream, port) = TestUpstream::start().await;
    let chat = format!("{}\n{FAST_RETRY}", CHAT_SOURCE.replace("PORT", &port.to_string()));
    let gw = Gateway::start(&store, &hooks(port, &chat)).await;
    upstream.fail_on(r#""conversation":"slow""#);
    for (conversation, n) in [("slow", 1), ("slow", 2), ("fast", 1), ("slow", 3), ("fast", 2), ("other", 1)] {
        let body = chat_event(conversation, n);
        let (status, _, answer) = gw.post_owned("chat", &acme_headers(&body), body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    // The other conversations are not held up by the failing one.
    let delivered = upstream.wait_delivered(3).await;
    let mut passed: Vec<_> = delivered.iter().map(conversation_of).collect();
    passed.sort();
    assert_eq!(passed, [("fast".to_owned(), 1), ("fast".to_owned(), 2), ("other".to_owned(), 1)]);
    // The failing conversation's first event is retried; the ones behind it wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tried: Vec<_> = upstream.received().iter().map(conversation_of).filter(|(c, _)| c == "slow").collect();
    assert!(tried.len() >= 2, "retried: {tried:?}");
    assert!(tried.iter().all(|(_, n)| *n == 1), "nothing behind the unfinished event was tried: {tried:?}");

    upstream.heal();
    let delivered = upstream.wait_delivered(6).await;
    assert_eq!(delivered.len(), 6);
    let slow: Vec<u64> = delivered.iter().map(conversation_of).filter(|(c, _)| c == "slow").map(|(_, n)| n).collect();
    assert_eq!(slow, [1, 2, 3], "in acceptance order");
    let chat = "source=\"chat\"";
    assert_eq!(gw.metric("gateway_webhook_events_received_total", &[chat]), 6);
    assert_eq!(gw.metric("gateway_webhook_events_stored_total", &[chat]), 6);
    assert_eq!(gw.wait_metric("gateway_webhook_deliveries_total", &["outcome=\"delivered\"", chat], 6).await, 6);
    let retried = gw.metric("gateway_webhook_deliveries_total", &["outcome=\"retried\"", chat]);
    assert_eq!(retried as usize, upstream.received().len() - 6, "every failed attempt was retried");
    // Sequences strictly increase per key, zero-padded.
    for conversation in ["slow", "fast"] {
        let sequences: Vec<String> = delivered
            .iter()
            .filter(|r| conversation_of(r).0 == conversation)
            .map(|r| r.headers["webhook-sequence"].to_str().unwrap().to_owned())
            .collect();
        assert!(sequences.iter().all(|s| s.len() == 20), "{sequences:?}");
        assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{conversation}: {sequences:?}");
    }
    assert_eq!(gw.wait_pending("chat", 0).await, 0);
}

async fn attempts_run_out_into_the_dead_letters_and_a_replay_delivers(store: Store) {
    let (upstream, port) = TestUpstream::start().await;
    // As many waits as the default schedule, compressed, each a tier of its own (on RabbitMQ
    // a delay queue of its own).
    let chat = format!(
        "{}\nretry = [\"10ms\", \"20ms\", \"30ms\", \"40ms\", \"50ms\", \"60ms\", \"70ms\", \"80ms\", \"90ms\"]",
        CHAT_SOURCE.replace("PORT", &port.to_string())
    );
    assert_eq!(crate::config::routes::Delivery::default().retry.len(), 9);
    let gw = Gateway::start(&store, &hooks(port, &chat)).await;
    upstream.fail_on("doomed");
    let body = chat_event("doomed", 1);
    let (status, _, answer) = gw.post_owned("chat", &acme_headers(&body), body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    assert_eq!(gw.wait_pending("chat", 0).await, 0);
    assert_eq!(upstream.received().len(), 10, "one attempt and a retry after each wait");
    let dead = gw.webhooks.dead_letters("chat").await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (name, letter) = &dead[0];
    assert_eq!(letter.event.id, id);
    assert!(letter.reason.starts_with("10 attempts failed"), "{}", letter.reason);
    assert_eq!(letter.event.key.as_deref(), Some("doomed"));

    // The upstream is fixed; the operator replays the event.
    upstream.heal();
    assert!(!gw.webhooks.replay_dead_letter("chat", "no-such-letter").await.unwrap());
    assert!(gw.webhooks.replay_dead_letter("chat", name).await.unwrap());
    let delivered = upstream.wait_delivered(1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].headers["webhook-id"], id.as_str());
    assert!(gw.webhooks.dead_letters("chat").await.unwrap().is_empty());
    assert_eq!(gw.wait_pending("chat", 0).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_by_default_signed_by_the_gateway() {
    let (upstream, port) = TestUpstream::start().await;
    let store = Store::spool();
    let key = b"gateway-delivery-key";
    let chat = CHAT_SOURCE.replace("PORT", &port.to_string()).replace("envelope = \"raw\"\n", "")
        + &format!("delivery_secrets = [\"whsec_{}\"]\n", B64.encode(key));
    let gw = Gateway::start(&store, &hooks(port, &chat)).await;
    let body = chat_event("c-1", 7);
    let (status, _, answer) = gw.post_owned("chat", &acme_headers(&body), body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let delivered = upstream.wait_delivered(1).await;
    let got = &delivered[0];
    assert_eq!(got.headers["content-type"], "application/cloudevents+json; charset=utf-8");
    assert!(got.headers.get("x-acme-signature").is_none(), "the sender's signature stays at the edge");
    let event: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["id"], answer["id"]);
    assert_eq!(event["source"], "portcullis/webhooks/chat");
    assert_eq!(event["subject"], "c-1");
    assert_eq!(event["data"], serde_json::json!({ "conversation": "c-1", "n": 7 }));
    assert_eq!(event["sequence"].as_str().unwrap().len(), 20);
    // The upstream verifies the gateway with Standard Webhooks.
    let (id, ts) = (got.headers["webhook-id"].to_str().unwrap(), got.headers["webhook-timestamp"].to_str().unwrap());
    let expected = B64.encode(mac(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", &got.body]));
    assert_eq!(got.headers["webhook-signature"].to_str().unwrap(), format!("v1,{expected}"));
}

async fn refused_event_is_set_aside_and_the_queue_moves_on(store: Store) {
    let (upstream, port) = TestUpstream::start().await;
    let gw = Gateway::start(&store, &hooks(port, "")).await;
    upstream.status.store(422, Ordering::SeqCst);
    let (status, _) = gw.post("billing", &standard_headers("msg_poison", EVENT), EVENT).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(gw.wait_pending("billing", 0).await, 0);
    assert_eq!(upstream.received().len(), 1, "a 4xx is not retried");

    upstream.status.store(200, Ordering::SeqCst);
    let (status, _) = gw.post("billing", &standard_headers("msg_next", EVENT), EVENT).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let received = upstream.wait_for(2).await;
    assert_eq!(received[1].headers["webhook-id"], "msg_next");
}

// ---- payload schemas ----

/// A Standard Webhooks source whose payloads must match the built-in WhatsApp schema, ordered
/// per conversation as a meta source is; `extra` adds keys.
fn whatsapp_hooks(port: u16, extra: &str) -> BTreeMap<String, Webhook> {
    let source = format!(
        r#"
[webhooks.whatsapp]
profile = "standard"
secrets = ["whsec_{key}"]
upstream = "http://127.0.0.1:{port}/hooks/whatsapp"
schema = "builtin:whatsapp"
ordering_key = [["/entry/0/changes/0/value/metadata/phone_number_id", "/entry/0/changes/0/value/messages/0/from"]]
envelope = "raw"
{FAST_RETRY}
{extra}
"#,
        key = B64.encode(STANDARD_KEY)
    );
    RoutesFile::parse(&source).unwrap().webhooks
}

/// Where a message's type is, in a WhatsApp notification.
const MESSAGE_TYPE: &str = "/entry/0/changes/0/value/messages/0/type";

/// The schema's text-message fixture (one conversation), saying `message <n>`, with `kind` as
/// its message type (`text` passes the schema; an unknown type fails at [`MESSAGE_TYPE`]).
fn whatsapp_message(n: u32, kind: &str) -> Vec<u8> {
    let mut payload: Value = serde_json::from_str(include_str!("../../tests/fixtures/whatsapp/text.json")).unwrap();
    let message = &mut payload["entry"][0]["changes"][0]["value"]["messages"][0];
    message["type"] = kind.into();
    message["text"]["body"] = format!("message {n}").into();
    serde_json::to_vec(&payload).unwrap()
}

async fn schema_failures_are_refused_with_422_and_leave_no_replay_mark(store: Store) {
    let (upstream, port) = TestUpstream::start().await;
    let gw = Gateway::start(&store, &whatsapp_hooks(port, "")).await;
    let source = "source=\"whatsapp\"";

    let invalid = whatsapp_message(1, "carrier_pigeon");
    let (status, headers, problem) =
        gw.post_owned("whatsapp", &standard_headers("wamid_1", &invalid), invalid.clone()).await;
    assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(headers["content-type"], "application/problem+json");
    let errors = problem["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{problem}");
    assert_eq!(errors[0]["field"], MESSAGE_TYPE, "{problem}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("\"text\"") && !message.contains("carrier_pigeon"), "values are not echoed: {message}");
    // Nothing stored, and no replay mark: the same delivery again is checked again.
    assert_eq!(gw.webhooks.pending("whatsapp").await.unwrap(), 0);
    let (status, _, problem) = gw.post_owned("whatsapp", &standard_headers("wamid_1", &invalid), invalid).await;
    assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    // A body that is not JSON fails as a whole.
    let garbage = b"not json".to_vec();
    let (status, _, problem) = gw.post_owned("whatsapp", &standard_headers("wamid_2", &garbage), garbage).await;
    assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "", "{problem}");
    assert_eq!(gw.webhooks.pending("whatsapp").await.unwrap(), 0);

    // The sender's corrected delivery of the same event is accepted and delivered.
    let valid = whatsapp_message(1, "text");
    let (status, _, answer) = gw.post_owned("whatsapp", &standard_headers("wamid_1", &valid), valid.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["id"], "wamid_1");
    let delivered = upstream.wait_delivered(1).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].headers["webhook-id"], "wamid_1");
    assert_eq!(delivered[0].body.as_ref(), valid.as_slice());
    // Accepted once, it is remembered: now the same event is a replay.
    let (status, _, problem) = gw.post_owned("whatsapp", &standard_headers("wamid_1", &valid), valid).await;
    assert_problem(status, &problem, StatusCode::UNAUTHORIZED, "signature_invalid");

    assert_eq!(gw.metric("gateway_webhook_events_refused_total", &["reason=\"validation_failed\"", source]), 3);
    assert_eq!(gw.metric("gateway_webhook_events_stored_total", &[source]), 1);
    assert_eq!(gw.wait_pending("whatsapp", 0).await, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upstream.received().len(), 1, "nothing refused is forwarded");
    assert!(gw.webhooks.dead_letters("whatsapp").await.unwrap().is_empty());
}

async fn schema_failures_go_to_the_dead_letters_undelivered(store: Store) {
    let (upstream, port) = TestUpstream::start().await;
    let gw = Gateway::start(&store, &whatsapp_hooks(port, "on_schema_failure = \"dead_letter\"")).await;
    let source = "source=\"whatsapp\"";

    // One conversation: a valid message, one that fails the schema, and a valid one after it.
    let events = [
        ("wamid_a", whatsapp_message(1, "text")),
        ("wamid_b", whatsapp_message(2, "carrier_pigeon")),
        ("wamid_c", whatsapp_message(3, "text")),
    ];
    for (id, body) in &events {
        let (status, _, answer) = gw.post_owned("whatsapp", &standard_headers(id, body), body.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{id}: {answer}");
        assert_eq!(answer["id"], *id);
    }
    // The valid ones are delivered in order; the one after the failure does not wait for it.
    let delivered = upstream.wait_delivered(2).await;
    let ids: Vec<&str> = delivered.iter().map(|r| r.headers["webhook-id"].to_str().unwrap()).collect();
    assert_eq!(ids, ["wamid_a", "wamid_c"]);
    assert_eq!(gw.wait_pending("whatsapp", 0).await, 0);

    // The failing one is in the dead letters with the reason, never attempted.
    let dead = gw.webhooks.dead_letters("whatsapp").await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (name, letter) = &dead[0];
    assert_eq!(letter.event.id, "wamid_b");
    assert!(letter.reason.starts_with(&format!("schema: {MESSAGE_TYPE}: ")), "{}", letter.reason);
    assert!(!letter.reason.contains("carrier_pigeon"), "{}", letter.reason);
    assert_eq!(letter.event.attempt, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upstream.received().len(), 2, "the upstream never receives it");
    assert_eq!(gw.metric("gateway_webhook_events_stored_total", &[source]), 3);
    assert_eq!(gw.metric("gateway_webhook_events_refused_total", &[source]), 0);
    assert_eq!(gw.wait_metric("gateway_webhook_deliveries_total", &["outcome=\"dead_lettered\"", source], 1).await, 1);

    // The operator's replay lifts the refusal: delivered as it came.
    assert!(gw.webhooks.replay_dead_letter("whatsapp", name).await.unwrap());
    let delivered = upstream.wait_delivered(3).await;
    assert_eq!(delivered.len(), 3);
    assert_eq!(delivered[2].headers["webhook-id"], "wamid_b");
    assert_eq!(delivered[2].body.as_ref(), events[1].1.as_slice());
    assert!(gw.webhooks.dead_letters("whatsapp").await.unwrap().is_empty());
    assert_eq!(gw.wait_pending("whatsapp", 0).await, 0);
}

#[tokio::test]
async fn meta_handshake_echoes_the_challenge_only_for_the_right_token() {
    let store = Store::spool();
    let gw = Gateway::start(&store, &hooks(free_port(), "")).await;
    let get = |query: String| {
        let http = gw.http.clone();
        let url = format!("{}/meta?{query}", gw.base);
        async move { http.get(url).send().await.unwrap() }
    };

    let ok = get(format!("hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444")).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(ok.text().await.unwrap(), "1158201444");

    for (query, expected) in [
        ("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1".to_owned(), StatusCode::FORBIDDEN),
        ("hub.mode=subscribe&hub.challenge=1".to_owned(), StatusCode::FORBIDDEN),
        (format!("hub.mode=unsubscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"), StatusCode::FORBIDDEN),
        (format!("hub.verify_token={VERIFY_TOKEN}&hub.challenge=1"), StatusCode::FORBIDDEN),
        (format!("hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}"), StatusCode::BAD_REQUEST),
        (
            format!("hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge={}", "9".repeat(1025)),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let response = get(query.clone()).await;
        assert_eq!(response.status(), expected, "{query}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{query}");
    }

    // Only Meta sources have a handshake.
    let response = gw.http.get(format!("{}/billing?hub.mode=subscribe", gw.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST", "RFC 9110 §15.5.6: a 405 names what is allowed");
    let response = gw.http.get(format!("{}/nobody", gw.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn source_ip_allowlist_uses_the_client_ip_layer_and_else_the_peer() {
    let (upstream, port) = TestUpstream::start().await;
    let store = Store::spool();
    let mut hooks = hooks(port, "allowed_ips = [\"10.0.0.0/8\"]");
    let acme = hooks.remove("acme").unwrap();
    let hooks = BTreeMap::from([("acme".to_owned(), acme)]);

    // Straight from 127.0.0.1, the peer address decides.
    let direct = Gateway::start(&store, &hooks).await;
    let (status, body) = direct.post("acme", &acme_headers(EVENT), EVENT).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");
    direct.webhooks.stop();

    // Behind the client-IP layer, its decision wins over the peer.
    let store = Store::spool();
    let allowed: std::net::IpAddr = "10.1.2.3".parse().unwrap();
    let proxied = Gateway::start_with(&store, &hooks, |r| r.layer(axum::Extension(ClientIp(allowed)))).await;
    let (status, body) = proxied.post("acme", &acme_headers(EVENT), EVENT).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(upstream.wait_for(1).await.len(), 1);
}

/// RabbitMQ only: the broker refusing a publish (its queue full) is a 503 with `Retry-After`,
/// and the sender's retry of the same delivery is accepted once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_full_queue_answers_503_with_retry_after_and_the_retry_is_accepted() {
    use futures::FutureExt as _;
    let Some(mut store) = Store::amqp() else { return };
    if let Some(settings) = store.amqp.as_mut() {
        settings.max_length = 1;
    }
    let outcome = std::panic::AssertUnwindSafe(full_queue_then_room(store.clone())).catch_unwind().await;
    store.clean().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn full_queue_then_room(store: Store) {
    // The upstream takes connections and never answers, and one event at a time is
    // delivered, so accepted events stay queued behind the one in flight.
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let black_hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut hooks = hooks(port, "");
    hooks.get_mut("billing").unwrap().delivery.concurrency = 1;
    let gw = Gateway::start(&store, &hooks).await;
    let post = |headers: Vec<(&'static str, String)>| {
        let mut request = gw.http.post(format!("{}/billing", gw.base)).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move { request.body(EVENT).send().await.unwrap() }
    };
    let mut refused = None;
    for i in 0..6 {
        let headers = standard_headers(&format!("msg_full{i}"), EVENT);
        let response = post(headers.clone()).await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some((i, headers, response));
            break;
        }
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let (refused_at, headers, response) = refused.expect("a full queue refuses events");
    assert!(response.headers().contains_key("retry-after"), "{:?}", response.headers());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unavailable", "{body}");

    // Once the upstream drains the queue, the same delivery sent again is accepted.
    black_hole.abort();
    let _ = black_hole.await;
    let upstream = TestUpstream::start_on(port).await;
    assert_eq!(gw.wait_pending("billing", 0).await, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = post(headers.clone()).await.status();
        if status == StatusCode::ACCEPTED {
            break;
        }
        assert!(Instant::now() < deadline, "the retry is still refused: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = upstream.wait_for(refused_at + 1).await;
    let last = received.last().unwrap();
    assert_eq!(last.headers["webhook-id"], format!("msg_full{refused_at}").as_str());
}

/// RabbitMQ only: the connection is lost while an event is being delivered, so the broker puts
/// back everything this instance held, and the retry of the event in flight can no longer be
/// deferred. The copies delivered again take over: the conversation is not held up, and its
/// events still arrive in acceptance order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_a_connection_lost_mid_delivery_holds_no_conversation_up() {
    use futures::FutureExt as _;
    let Some(store) = Store::amqp() else { return };
    let outcome = std::panic::AssertUnwindSafe(connection_lost_mid_delivery(store.clone())).catch_unwind().await;
    store.clean().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn connection_lost_mid_delivery(store: Store) {
    let (upstream, port) = TestUpstream::start().await;
    let chat = format!("{}\n{FAST_RETRY}", CHAT_SOURCE.replace("PORT", &port.to_string()));
    let gw = Gateway::start(&store, &hooks(port, &chat)).await;
    // The first event's first attempt is held at the upstream, then fails.
    upstream.fail_on(r#""n":0"#);
    let held = upstream.gate.clone().lock_owned().await;
    for n in 0..5 {
        let body = chat_event("c1", n);
        let (status, _, answer) = gw.post_owned("chat", &acme_headers(&body), body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.arrived.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the first attempt never reached the upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connection goes; the dispatcher claims what the broker put back.
    gw.webhooks.broker.as_ref().expect("on RabbitMQ").sever().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.received().iter().all(|r| r.status == 200) {
        assert!(Instant::now() < deadline, "the held attempt never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    upstream.heal();

    let first_deliveries = || {
        let mut first: Vec<u64> = Vec::new();
        for (_, n) in upstream.delivered().iter().map(conversation_of) {
            if !first.contains(&n) {
                first.push(n);
            }
        }
        first
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while first_deliveries().len() < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(first_deliveries(), [0, 1, 2, 3, 4], "every event, first deliveries in acceptance order");
    assert_eq!(gw.wait_pending("chat", 0).await, 0);
}

// ---- compressed bodies ----

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

impl Gateway {
    async fn post_owned(
        &self,
        source: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request =
            self.http.post(format!("{}/{source}", self.base)).header("content-type", "application/json").body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap_or(Value::Null))
    }
}

/// A valid gzip stream of `mib` MiB of zeros without ever holding them: one MiB of zeros is
/// deflated with a full flush (which resets the compressor, so every MiB compresses to the
/// same bytes), and that block is repeated. Returns (gzip header and first block, the block
/// every further MiB repeats, the final block and trailer); ~1 KiB per MiB inflated.
fn gzip_zeros(mib: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use flate2::{Compress, Compression, FlushCompress};
    fn deflate(c: &mut Compress, mut input: &[u8], flush: FlushCompress) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            out.reserve(64 * 1024);
            let before = c.total_in();
            c.compress_vec(input, &mut out, flush).unwrap();
            input = &input[usize::try_from(c.total_in() - before).unwrap()..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
    let zeros = vec![0u8; 1 << 20];
    let mut compress = Compress::new(Compression::best(), false);
    let first = deflate(&mut compress, &zeros, FlushCompress::Full);
    let repeat = deflate(&mut compress, &zeros, FlushCompress::Full);
    let last = deflate(&mut compress, &[], FlushCompress::Finish);
    let mut crc = flate2::Crc::new();
    for _ in 0..mib {
        crc.update(&zeros);
    }
    let head = [&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff][..], &first].concat();
    let size = u32::try_from((mib << 20) % (1 << 32)).unwrap();
    let tail = [last, crc.sum().to_le_bytes().to_vec(), size.to_le_bytes().to_vec()].concat();
    (head, repeat, tail)
}

#[test]
fn the_zeros_generator_is_a_valid_gzip_stream() {
    use std::io::Read as _;
    let (head, repeat, tail) = gzip_zeros(4);
    let stream = [head, repeat.clone(), repeat.clone(), repeat, tail].concat();
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(stream.as_slice()).read_to_end(&mut inflated).unwrap();
    assert_eq!(inflated.len(), 4 << 20);
    assert!(inflated.iter().all(|b| *b == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_verified_stored_and_delivered_inflated() {
    let (upstream, port) = TestUpstream::start().await;
    let store = Store::spool();
    let gw = Gateway::start(&store, &hooks(port, "")).await;
    let compressed = gzip(EVENT);

    // Signed over the inflated bytes: accepted, delivered inflated, no Content-Encoding.
    let mut headers = meta_headers(EVENT);
    headers.push(("content-encoding", "gzip".to_owned()));
    let (status, _, body) = gw.post_owned("meta", &headers, compressed.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let mut headers = standard_headers("msg_gzip", EVENT);
    headers.push(("content-encoding", "x-gzip".to_owned()));
    let (status, _, body) = gw.post_owned("billing", &headers, compressed.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let received = upstream.wait_for(2).await;
    assert_eq!(received.len(), 2);
    for got in &received {
        assert_eq!(got.body.as_ref(), EVENT);
        assert!(!got.headers.contains_key("content-encoding"), "{:?}", got.headers);
    }
    assert_eq!(gw.wait_pending("meta", 0).await, 0);

    // Signed over the compressed bytes: refused.
    let mut headers = meta_headers(&compressed);
    headers.push(("content-encoding", "gzip".to_owned()));
    let (status, _, body) = gw.post_owned("meta", &headers, compressed.clone()).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "signature_invalid");

    // Another coding: 415 naming what is accepted.
    for coding in ["br", "deflate", "gzip, br"] {
        let mut headers = acme_headers(EVENT);
        headers.push(("content-encoding", coding.to_owned()));
        let (status, response_headers, body) = gw.post_owned("acme", &headers, compressed.clone()).await;
        assert_problem(status, &body, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        assert!(body["detail"].as_str().unwrap().contains("gzip"), "{body}");
        assert_eq!(response_headers["accept-encoding"], "gzip, identity");
        assert_eq!(response_headers["content-type"], "application/problem+json");
    }

    // A corrupt or truncated stream: 400.
    let truncated = compressed[..compressed.len() - 5].to_vec();
    for corrupt in [b"definitely not gzip".to_vec(), truncated] {
        let mut headers = acme_headers(EVENT);
        headers.push(("content-encoding", "gzip".to_owned()));
        let (status, _, body) = gw.post_owned("acme", &headers, corrupt).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed_body");
    }

    // Past the limit once inflated, though small when sent: 413.
    let big = gzip(&vec![b' '; (1 << 20) + 1]);
    assert!(big.len() < 64 * 1024);
    let mut headers = acme_headers(EVENT);
    headers.push(("content-encoding", "gzip".to_owned()));
    let (status, _, body) = gw.post_owned("acme", &headers, big).await;
    assert_problem(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    for source in ["meta", "acme"] {
        assert_eq!(gw.webhooks.pending(source).await.unwrap(), 0);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.received().len(), 2, "nothing refused is forwarded");
}

/// 1 GiB of zeros, ~1 MiB gzipped, streamed as it is generated: refused with 413 as soon as
/// the inflated bytes pass 1 MiB, long before the sender is done, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_is_refused_quickly_and_nothing_is_stored() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (upstream, port) = TestUpstream::start().await;
    let store = Store::spool();
    let gw = Gateway::start(&store, &hooks(port, "")).await;
    let mib = 1024;
    let (head, repeat, tail) = gzip_zeros(mib);
    let compressed = head.len() + repeat.len() * (mib - 1) + tail.len();
    assert!(compressed < 2 << 20, "{compressed} bytes");
    // Signed over what it inflates to, so only the size can refuse it.
    let mut mac = Hmac::<Sha256>::new_from_slice(META_SECRET.as_bytes()).unwrap();
    for _ in 0..mib {
        mac.update(&[0; 1 << 20]);
    }
    let signature = hex::encode(mac.finalize().into_bytes());

    let authority = gw.base.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let head_line = format!(
            "POST /v1/webhooks/meta HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\n\
             content-encoding: gzip\r\nx-hub-signature-256: sha256={signature}\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        let chunk =
            |data: &[u8]| [format!("{:x}\r\n", data.len()).into_bytes(), data.to_vec(), b"\r\n".to_vec()].concat();
        let repeated = chunk(&repeat);
        let mut pieces = vec![head_line.into_bytes(), chunk(&head)];
        pieces.extend(std::iter::repeat_n(repeated, mib - 1));
        pieces.push(chunk(&tail));
        pieces.push(b"0\r\n\r\n".to_vec());
        for piece in pieces {
            if write.write_all(&piece).await.is_err() {
                return;
            }
        }
    });
    let mut response = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), read.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => break,
            Ok(Ok(n)) => response.extend_from_slice(&buffer[..n]),
        }
        if response.ends_with(b"}") {
            break;
        }
    }
    let elapsed = started.elapsed();
    writer.abort();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("body_too_large"), "{response}");
    assert!(elapsed < Duration::from_secs(2), "refused after {elapsed:?}");

    assert_eq!(gw.webhooks.pending("meta").await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(upstream.received().is_empty());
}

// ---- the token profile ----

const TOKEN_SOURCE: &str = r#"
[webhooks.genesys]
profile = "token"
secrets = ["genesys-old-token", "genesys-new-token"]
header = "x-genesys-token"
id_pointer = "/eventId"
upstream = "http://127.0.0.1:PORT/hooks/genesys"

[webhooks.plain]
profile = "token"
secrets = ["plain-token"]
header = "x-plain-token"
upstream = "http://127.0.0.1:PORT/hooks/plain"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_profile_accepts_the_token_refuses_others_and_replays() {
    let (upstream, port) = TestUpstream::start().await;
    let store = Store::spool();
    let gw = Gateway::start(&store, &hooks(port, &TOKEN_SOURCE.replace("PORT", &port.to_string()))).await;
    let token = |value: &str| vec![("x-genesys-token", value.to_owned())];
    let event = |id: &str| format!(r#"{{"eventId":"{id}","topic":"v2.users.presence"}}"#).into_bytes();

    // Wrong or missing token: 401, nothing stored, and no replay mark left behind.
    for headers in [token("genesys-older-token"), token(""), vec![], vec![("x-plain-token", "plain-token".to_owned())]]
    {
        let (status, _, body) = gw.post_owned("genesys", &headers, event("ev-1")).await;
        assert_problem(status, &body, StatusCode::UNAUTHORIZED, "signature_invalid");
    }
    assert_eq!(gw.webhooks.pending("genesys").await.unwrap(), 0);

    // Either secret of the rotation passes; the id comes from the body.
    let (status, _, body) = gw.post_owned("genesys", &token("genesys-old-token"), event("ev-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["id"], "ev-1");
    let (status, _, body) = gw.post_owned("genesys", &token("genesys-new-token"), event("ev-2")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // The same id again, whatever the rest of the body: a replay.
    let again = br#"{"eventId":"ev-1","topic":"changed"}"#.to_vec();
    let (status, _, body) = gw.post_owned("genesys", &token("genesys-new-token"), again).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "signature_invalid");
    // An authenticated body without its id: 400.
    let (status, _, body) = gw.post_owned("genesys", &token("genesys-new-token"), b"{}".to_vec()).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed_body");

    // Without an id source, the same body is the same delivery.
    let plain = vec![("x-plain-token", "plain-token".to_owned())];
    let (status, _, body) = gw.post_owned("plain", &plain, EVENT.to_vec()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _, body) = gw.post_owned("plain", &plain, EVENT.to_vec()).await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "signature_invalid");
    let (status, _, body) = gw.post_owned("plain", &plain, br#"{"other":true}"#.to_vec()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let received = upstream.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.received().len(), 4, "{received:?}");
    for got in upstream.received() {
        assert!(!got.headers.contains_key("x-genesys-token"), "the token is never forwarded");
        assert!(!got.headers.contains_key("x-plain-token"), "the token is never forwarded");
    }
    let ev1 = received.iter().find(|r| r.headers["webhook-id"] == "ev-1").unwrap();
    assert_eq!(ev1.path, "/hooks/genesys");
}

// ---- one active dispatcher per source across instances ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_dispatches_a_source_and_another_takes_over_when_it_stops() {
    let Some(store) = Store::redis().await else { return };
    // The same source on two instances, each pointing at an upstream of its own, so each
    // delivery shows which instance made it.
    let (first_upstream, first_port) = TestUpstream::start().await;
    let (second_upstream, second_port) = TestUpstream::start().await;
    let first = Gateway::start(&store, &hooks(first_port, "")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Gateway::start(&store, &hooks(second_port, "")).await;

    for i in 0..5 {
        let id = format!("msg_lease_a{i}");
        let (status, body) = second.post("billing", &standard_headers(&id, EVENT), EVENT).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    assert_eq!(first_upstream.wait_for(5).await.len(), 5, "the lease holder delivers what either instance accepted");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(second_upstream.received().is_empty(), "the other instance delivers nothing meanwhile");

    // The holder stops and lets the lease go; the other one takes over.
    first.webhooks.stop();
    drop(first);
    for i in 0..5 {
        let id = format!("msg_lease_b{i}");
        let (status, body) = second.post("billing", &standard_headers(&id, EVENT), EVENT).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    assert_eq!(second_upstream.wait_for(5).await.len(), 5);
    assert_eq!(first_upstream.received().len(), 5, "nothing more reached the stopped instance's upstream");
    assert_eq!(second.wait_pending("billing", 0).await, 0);
}

// ---- https upstreams ----

/// A CA and a certificate for 127.0.0.1 it signed, made with the `openssl` command: (the CA's
/// PEM file, the server's certificate chain and key).
fn test_pki(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key"]);
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Portcullis test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "server.key"]);
    run(&["req", "-new", "-key", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// An https upstream on port 0 that records each body it is sent; returns its port.
async fn https_upstream(cert: &std::path::Path, key: &std::path::Path, got: Arc<Mutex<Vec<Bytes>>>) -> u16 {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let certs: Vec<_> = CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, got) = (acceptor.clone(), got.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate ends the handshake here.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let got = got.clone();
                    async move {
                        use http_body_util::BodyExt as _;
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        got.lock().unwrap().push(body);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<Bytes>::new()))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified_against_ca_file_or_the_system_roots() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(pki.path());
    let got: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let port = https_upstream(&cert, &key, got.clone()).await;
    let sources = format!(
        r#"
[webhooks.private]
profile = "generic"
secrets = ["acme-secret"]
header = "x-acme-signature"
encoding = "base64"
upstream = "https://127.0.0.1:{port}/hooks"
envelope = "raw"
ca_file = "{ca}"
{FAST_RETRY}

[webhooks.public]
profile = "generic"
secrets = ["acme-secret"]
header = "x-acme-signature"
encoding = "base64"
upstream = "https://127.0.0.1:{port}/hooks"
envelope = "raw"
{FAST_RETRY}
"#,
        ca = ca.display()
    );
    let store = Store::spool();
    let hooks = RoutesFile::parse(&sources).unwrap().webhooks;
    let gw = Gateway::start(&store, &hooks).await;
    // Trusted through its CA file: delivered over TLS.
    let body = b"{\"over\":\"tls\"}".to_vec();
    let (status, _, _) = gw.post_owned("private", &acme_headers(&body), body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(gw.wait_pending("private", 0).await, 0);
    assert_eq!(got.lock().unwrap().as_slice(), [Bytes::from(body)]);
    // The same certificate against the system's roots: refused, so kept and retried.
    let body = b"{\"over\":\"untrusted\"}".to_vec();
    let (status, _, _) = gw.post_owned("public", &acme_headers(&body), body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.webhooks.pending("public").await.unwrap(), 1, "not delivered to an untrusted certificate");
    assert!(gw.metric("gateway_webhook_deliveries_total", &["outcome=\"retried\"", "source=\"public\""]) >= 1);
    assert_eq!(got.lock().unwrap().len(), 1);

    // A CA file that cannot be used stops the start-up, naming it.
    let missing = sources.replace(&ca.display().to_string(), "/nonexistent/ca.pem");
    let hooks = RoutesFile::parse(&missing).unwrap().webhooks;
    let Err(e) = Webhooks::launch(&hooks, store.deps(), None, options()).await else { panic!("started") };
    assert!(e.contains("webhooks.private.ca_file"), "{e}");
    // And a CA file for a plain http upstream is refused by the configuration.
    let plain = sources.replacen("https://", "http://", 1);
    let e = RoutesFile::parse(&plain).unwrap_err().to_string();
    assert!(e.contains("ca_file") && e.contains("https upstream"), "{e}");
}

// ---- publishing to broker consumers ----

#[path = "../../examples/webhook_consumer.rs"]
mod webhook_consumer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_reach_a_broker_consumer_signed_and_in_order() {
    let Some(store) = Store::amqp() else { return };
    let url = testkit::amqp_url().unwrap();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let (exchange, queue) = (format!("pc_test.{unique}.chat"), format!("pc_test.{unique}.archive"));
    // The consumer exists first: it declares the exchange the gateway checks at start-up.
    let mut consumer = webhook_consumer::Consumer::open(&url, &exchange, "whatsapp.#", &queue).await.unwrap();
    let key = b"broker-delivery-key".to_vec();
    let source = format!(
        r#"
[webhooks.chat]
profile = "generic"
secrets = ["acme-secret"]
header = "x-acme-signature"
encoding = "base64"
publish = {{ exchange = "{exchange}", routing_key = "whatsapp.inbound" }}
ordering_key = "/conversation"
delivery_secrets = ["whsec_{}"]
{FAST_RETRY}
"#,
        B64.encode(&key)
    );
    let hooks = RoutesFile::parse(&source).unwrap().webhooks;
    let gw = Gateway::start(&store, &hooks).await;
    for n in 0..5 {
        let body = chat_event("c-9", n);
        let (status, _, answer) = gw.post_owned("chat", &acme_headers(&body), body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        let event = tokio::time::timeout(Duration::from_secs(15), consumer.next(std::slice::from_ref(&key), |_| true))
            .await
            .expect("an event within 15 s")
            .unwrap();
        assert_eq!(event.content_type, "application/cloudevents+json; charset=utf-8");
        let cloud_event: Value = serde_json::from_slice(&event.body).unwrap();
        assert_eq!(cloud_event["id"].as_str(), Some(event.id.as_str()));
        assert_eq!(cloud_event["subject"], "c-9");
        seen.push(cloud_event["data"]["n"].as_u64().unwrap());
    }
    assert_eq!(seen, [0, 1, 2, 3, 4], "one conversation, in acceptance order");
    assert_eq!(gw.wait_pending("chat", 0).await, 0);
    // A signature under another key does not verify.
    let body = chat_event("c-9", 5);
    gw.post_owned("chat", &acme_headers(&body), body).await;
    let wrong = consumer.next(&[b"not-the-key".to_vec()], |_| true).await.unwrap_err();
    assert!(wrong.contains("does not verify"), "{wrong}");
    drop(gw);
    consumer.delete(&queue).await.unwrap();
    store.clean().await;

    // Without the broker, or with an exchange that does not exist, the gateway does not start.
    let e = Webhooks::launch(&hooks, Store::spool().deps(), None, options()).await.err().unwrap();
    assert!(e.contains("webhooks.chat.publish") && e.contains("AMQP_URL"), "{e}");
    let missing = RoutesFile::parse(&source.replace(&exchange, "pc_test.no-such-exchange")).unwrap().webhooks;
    let e = Webhooks::launch(&missing, store.deps(), store.amqp.clone(), options()).await.err().unwrap();
    assert!(e.contains("webhooks.chat.publish.exchange"), "{e}");
}
