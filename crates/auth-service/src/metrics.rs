//! Prometheus metrics, named as the seeds name them. Each service instance owns a registry,
//! so several instances in one process (tests, the all-in-one binary) never collide.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub operations: IntCounterVec,
    pub tokens_generated: IntCounterVec,
    pub password_hash_duration: Histogram,
    pub active_sessions: IntGauge,
    pub event_publish_failures: IntCounter,
    /// Events waiting for the bus to come back (set when rendered).
    pub events_pending: IntGauge,
    /// Events dropped because the waiting queue was full (set when rendered).
    pub events_dropped: IntGauge,
    /// Password hashes running now (set when rendered).
    pub password_hashes_running: IntGauge,
    pub http_requests: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let operations = IntCounterVec::new(
            Opts::new("auth_operations_total", "Auth operations by operation and outcome"),
            &["operation", "status"],
        )?;
        let tokens_generated =
            IntCounterVec::new(Opts::new("auth_tokens_generated_total", "Tokens issued, by type"), &["type"])?;
        let password_hash_duration = Histogram::with_opts(
            HistogramOpts::new("auth_password_hash_duration_seconds", "Argon2id hash or verify time")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )?;
        let active_sessions = IntGauge::new("auth_active_sessions", "Live sessions")?;
        let event_publish_failures =
            IntCounter::new("auth_event_publish_failures_total", "Events that could not be published")?;
        let events_pending = IntGauge::new("auth_events_pending", "Events waiting for the bus to be published")?;
        let events_dropped =
            IntGauge::new("auth_events_dropped_total", "Events dropped because the waiting queue was full")?;
        let password_hashes_running = IntGauge::new("auth_password_hashes_running", "Argon2id hashes running now")?;
        let http_requests = IntCounterVec::new(
            Opts::new("auth_http_requests_total", "HTTP requests by method and status"),
            &["method", "status"],
        )?;
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(tokens_generated.clone()))?;
        registry.register(Box::new(password_hash_duration.clone()))?;
        registry.register(Box::new(active_sessions.clone()))?;
        registry.register(Box::new(event_publish_failures.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(events_pending.clone()))?;
        registry.register(Box::new(events_dropped.clone()))?;
        registry.register(Box::new(password_hashes_running.clone()))?;
        Ok(Self {
            registry,
            operations,
            tokens_generated,
            password_hash_duration,
            active_sessions,
            event_publish_failures,
            events_pending,
            events_dropped,
            password_hashes_running,
            http_requests,
        })
    }

    pub fn operation(&self, operation: &str, ok: bool) {
        self.operations.with_label_values(&[operation, if ok { "success" } else { "failure" }]).inc();
    }

    pub fn token_issued(&self, kind: &str) {
        self.tokens_generated.with_label_values(&[kind]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
