//! Webhooks through an outage, on the real binary: with the upstream down, 1 000 signed events
//! over 50 conversations, each conversation's events sent one after another's 202 (a sender
//! retrying 503s and lost connections as Meta does); the all-in-one binary is SIGKILLed in the
//! middle and started again, and on RabbitMQ the broker itself is stopped and started
//! (`rabbitmqctl stop_app`/`start_app`) while events are being confirmed. Then the upstream
//! comes back: every id arrives, each conversation's first deliveries come in acceptance order
//! with a strictly increasing `webhook-sequence`, and duplicates are only re-deliveries.
//!
//! On the spool always; on Redis (+ PostgreSQL) when `REDIS_URL`/`DATABASE_URL` are set and
//! on RabbitMQ when `AMQP_URL` is set (all required in CI through `testkit`). The RabbitMQ run
//! has its own queue prefix, and a guard starts the broker's application again if the test
//! fails while it is stopped. Under `cargo test` the test binaries run one after another, so
//! no other broker test runs meanwhile; under nextest, `.config/nextest.toml` puts every
//! RabbitMQ test in one group of one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use support::{Binary, free_port};

mod support;

const KEY: &[u8] = b"outage-test-standard-webhooks-key";
const CONVERSATIONS: usize = 50;
const PER_CONVERSATION: usize = 20;
const TOTAL: usize = CONVERSATIONS * PER_CONVERSATION;

/// Where the binary keeps its events.
enum Store {
    Spool,
    Redis { database_url: String, redis_url: String },
    Amqp { database_url: String, redis_url: String, amqp_url: String },
}

async fn wait_healthy(http: &reqwest::Client, port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(format!("http://127.0.0.1:{port}/health")).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the binary never became healthy:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts RabbitMQ's application again if a test stopped it and then failed.
struct BrokerGuard;

impl BrokerGuard {
    fn rabbitmqctl(verb: &str) {
        let status = Command::new("rabbitmqctl").arg(verb).stdout(Stdio::null()).status().unwrap();
        assert!(status.success(), "rabbitmqctl {verb} failed");
    }
}

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").stdout(Stdio::null()).status();
    }
}

/// Deletes, when dropped (after the binary, also when the test fails), the queues of a run.
struct QueueCleanup(String);

impl Drop for QueueCleanup {
    fn drop(&mut self) {
        delete_queues(&self.0);
    }
}

/// Deletes every queue whose name starts with `prefix`.
fn delete_queues(prefix: &str) {
    let output = Command::new("rabbitmqctl").args(["list_queues", "name", "--quiet", "--no-table-headers"]).output();
    let Ok(output) = output else { return };
    for name in String::from_utf8_lossy(&output.stdout).lines().map(str::trim).filter(|n| n.starts_with(prefix)) {
        let _ = Command::new("rabbitmqctl").args(["delete_queue", name]).stdout(Stdio::null()).status();
    }
}

fn signed(id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap();
    for part in [id.as_bytes(), b".", ts.as_bytes(), b".", body] {
        mac.update(part);
    }
    let signature = B64.encode(mac.finalize().into_bytes());
    vec![("webhook-id", id.to_owned()), ("webhook-timestamp", ts), ("webhook-signature", format!("v1,{signature}"))]
}

/// What one sender saw.
#[derive(Default)]
struct Sent {
    /// Answered 202 on the first try or a later one.
    accepted: AtomicUsize,
    /// Answered 401 "already received" after an earlier try of the same id failed to get its
    /// answer (the binary was killed between storing it and answering).
    already: AtomicUsize,
    retries: AtomicUsize,
}

/// Sends one event until the gateway takes it, as a webhook sender does.
async fn send(http: &reqwest::Client, url: &str, id: &str, body: Vec<u8>, sent: &Sent) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut tries = 0u32;
    loop {
        let mut request = http.post(url).header("content-type", "application/json").body(body.clone());
        for (name, value) in signed(id, &body) {
            request = request.header(name, value);
        }
        let outcome = request.send().await.map(|r| r.status().as_u16());
        match outcome {
            Ok(202) => {
                sent.accepted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(401) if tries > 0 => {
                sent.already.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(401) => panic!("{id}: refused on its first try"),
            Ok(status) => {
                assert!(status == 503 || status == 502, "{id}: answered {status}, which a sender would not retry")
            }
            Err(_) => {}
        }
        tries += 1;
        sent.retries.fetch_add(1, Ordering::Relaxed);
        assert!(Instant::now() < deadline, "{id}: never accepted");
        tokio::time::sleep(Duration::from_millis(50 * u64::from(tries.min(10)))).await;
    }
}

/// A delivery the upstream took: (id, conversation, n, sequence).
type Delivery = (String, String, u64, String);

async fn serve_upstream(port: u16, got: Arc<Mutex<Vec<Delivery>>>) {
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let got = got.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let header = |name: &str| parts.headers[name].to_str().unwrap().to_owned();
            got.lock().unwrap().push((
                header("webhook-id"),
                value["conversation"].as_str().unwrap().to_owned(),
                value["n"].as_u64().unwrap(),
                header("webhook-sequence"),
            ));
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

async fn outage(store: Store) {
    let tmp = tempfile::tempdir().unwrap();
    let (upstream_port, gateway_port) = (free_port(), free_port());
    let retry = std::iter::once("\"200ms\"".to_owned())
        .chain(std::iter::repeat_n("\"2s\"".to_owned(), 31))
        .collect::<Vec<_>>()
        .join(", ");
    let routes = tmp.path().join("routes.toml");
    std::fs::write(
        &routes,
        format!(
            "[webhooks.chat]\nprofile = \"standard\"\nsecrets = [\"whsec_{}\"]\n\
             upstream = \"http://127.0.0.1:{upstream_port}/hooks\"\nordering_key = \"/conversation\"\n\
             envelope = \"raw\"\ntolerance = \"10m\"\nretry = [{retry}]\n",
            B64.encode(KEY)
        ),
    )
    .unwrap();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let mut env: Vec<(String, String)> = [
        ("GATEWAY_PORT", gateway_port.to_string()),
        ("AUTH_PORT", "0".to_owned()),
        ("AUTH_GRPC_PORT", "0".to_owned()),
        ("SOCKET_PORT", "0".to_owned()),
        ("DATA_DIR", tmp.path().join("data").display().to_string()),
        ("GATEWAY_CONFIG", routes.display().to_string()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let (database_url, redis_url, amqp_url) = match &store {
        Store::Spool => (None, None, None),
        Store::Redis { database_url, redis_url } => (Some(database_url), Some(redis_url), None),
        Store::Amqp { database_url, redis_url, amqp_url } => (Some(database_url), Some(redis_url), Some(amqp_url)),
    };
    let queue_prefix = format!("pc_test.outage.{unique}.");
    for (name, value) in [
        ("DATABASE_URL", database_url.cloned()),
        ("REDIS_URL", redis_url.cloned()),
        ("REDIS_KEY_PREFIX", redis_url.map(|_| format!("pc_test:outage:{unique}:"))),
        ("AMQP_URL", amqp_url.cloned()),
        ("AMQP_QUEUE_PREFIX", amqp_url.map(|_| queue_prefix.clone())),
    ] {
        if let Some(value) = value {
            env.push((name.to_owned(), value));
        }
    }
    // Declared before the binary, so dropped after it.
    let _cleanup = amqp_url.map(|_| QueueCleanup(queue_prefix.clone()));
    let log = tmp.path().join("portcullis.log");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let binary = Arc::new(Mutex::new(Binary::start(&env, &log)));
    wait_healthy(&http, gateway_port, &log).await;

    // The senders: each conversation's events one after another's 202.
    let sent = Arc::new(Sent::default());
    let url = format!("http://127.0.0.1:{gateway_port}/v1/webhooks/chat");
    let mut senders = tokio::task::JoinSet::new();
    for c in 0..CONVERSATIONS {
        let (http, url, sent) = (http.clone(), url.clone(), sent.clone());
        senders.spawn(async move {
            for n in 0..PER_CONVERSATION {
                let body = format!(r#"{{"conversation":"c{c}","n":{n}}}"#).into_bytes();
                send(&http, &url, &format!("evt-{c}-{n}"), body, &sent).await;
            }
        });
    }
    let progress = |sent: &Sent| sent.accepted.load(Ordering::Relaxed) + sent.already.load(Ordering::Relaxed);
    let wait_for = async |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while progress(&sent) < count {
            assert!(Instant::now() < deadline, "stuck at {} accepted", progress(&sent));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };

    // In the middle: SIGKILL, then the same binary on the same storage and port.
    wait_for(TOTAL * 3 / 10).await;
    binary.lock().unwrap().kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    *binary.lock().unwrap() = Binary::start(&env, &log);

    // On RabbitMQ: the broker goes away while events are being confirmed, and comes back.
    let guard = if amqp_url.is_some() {
        wait_for(TOTAL * 6 / 10).await;
        let guard = BrokerGuard;
        tokio::task::spawn_blocking(|| BrokerGuard::rabbitmqctl("stop_app")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::spawn_blocking(|| BrokerGuard::rabbitmqctl("start_app")).await.unwrap();
        Some(guard)
    } else {
        None
    };
    while let Some(done) = senders.join_next().await {
        done.unwrap();
    }
    assert_eq!(progress(&sent), TOTAL);
    drop(guard);

    // The upstream comes back: every id arrives.
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    serve_upstream(upstream_port, got.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let ids: HashSet<String> = got.lock().unwrap().iter().map(|d| d.0.clone()).collect();
        if ids.len() == TOTAL {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {TOTAL} ids arrived:\n{}",
            ids.len(),
            std::fs::read_to_string(&log).unwrap_or_default().lines().rev().take(40).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = got.lock().unwrap().clone();

    // Per conversation, first deliveries in acceptance order, sequences strictly increasing.
    let mut first: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let mut seen: HashMap<String, Delivery> = HashMap::new();
    let mut duplicates = 0;
    for delivery in &got {
        match seen.get(&delivery.0) {
            Some(earlier) => {
                assert_eq!((&earlier.1, earlier.2), (&delivery.1, delivery.2), "a duplicate is the same event");
                duplicates += 1;
            }
            None => {
                seen.insert(delivery.0.clone(), delivery.clone());
                first.entry(delivery.1.clone()).or_default().push((delivery.2, delivery.3.clone()));
            }
        }
    }
    assert_eq!(first.len(), CONVERSATIONS);
    for (conversation, deliveries) in &first {
        let ns: Vec<u64> = deliveries.iter().map(|(n, _)| *n).collect();
        assert_eq!(ns, (0..PER_CONVERSATION as u64).collect::<Vec<_>>(), "{conversation}: in acceptance order");
        assert!(
            deliveries.windows(2).all(|w| w[0].1 < w[1].1),
            "{conversation}: sequences strictly increase: {deliveries:?}"
        );
    }
    eprintln!(
        "outage: {TOTAL} events, {} retries by the senders, {} answered 'already received', {duplicates} duplicate deliveries",
        sent.retries.load(Ordering::Relaxed),
        sent.already.load(Ordering::Relaxed)
    );
    binary.lock().unwrap().kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_on_the_spool() {
    outage(Store::Spool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_on_redis() {
    let Some(testkit::Backend::Postgres { database_url, redis_url }) = testkit::Backend::shared() else { return };
    outage(Store::Redis { database_url, redis_url }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_on_rabbitmq() {
    let Some(amqp_url) = testkit::amqp_url() else { return };
    let Some(testkit::Backend::Postgres { database_url, redis_url }) = testkit::Backend::shared() else { return };
    outage(Store::Amqp { database_url, redis_url, amqp_url }).await;
}
