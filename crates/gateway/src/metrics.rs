//! Prometheus metrics for `/metrics`: requests by route and status, latency, errors by source,
//! rate-limit refusals and fallbacks, the credential cache's hit rate and each upstream's
//! breaker state. Values owned elsewhere (cache counters, breakers) are read at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::proxy::BreakerState;

/// The route label of every configured route's request (SPEC §6 keeps route prefixes out of
/// labels, so their number stays bounded).
pub const PROXIED_ROUTE: &str = "route";

/// The series of a proxied request answered 200, the common case, resolved once at start-up
/// so counting it is two atomic updates, not two label lookups.
struct ProxiedOk {
    requests: IntCounter,
    latency: prometheus::Histogram,
}

pub struct Metrics {
    registry: Registry,
    proxied_ok: ProxiedOk,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub errors: IntCounterVec,
    pub rate_limited: IntCounterVec,
    rate_limit_fallback: IntGauge,
    rate_limit_fallback_checks: IntCounter,
    auth_lookups: IntCounter,
    auth_rpcs: IntCounter,
    auth_misses: IntCounter,
    auth_hit_ratio: prometheus::Gauge,
    breaker_open: IntGaugeVec,
    webhooks_pending: IntGaugeVec,
    seen_lookups: AtomicU64,
    seen_rpcs: AtomicU64,
    seen_misses: AtomicU64,
    seen_fallbacks: AtomicU64,
}

/// What the scrape reads from the rest of the gateway.
pub struct Snapshot {
    pub auth_lookups: u64,
    pub auth_rpcs: u64,
    /// Validations the cache could not answer (each one asked of the auth service).
    pub auth_misses: u64,
    pub rate_limit_degraded: bool,
    pub rate_limit_fallbacks: u64,
    pub breakers: Vec<BreakerState>,
    /// Webhook events stored and not yet delivered, by source.
    pub webhooks_pending: Vec<(String, u64)>,
    /// Families kept elsewhere (the webhook pipeline's), exposed with these.
    pub families: Vec<prometheus::proto::MetricFamily>,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are fixed and unique, so registration cannot collide.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    #[allow(clippy::expect_used)] // Static metric definitions: a failure is a programming error at start-up.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new("gateway_requests_total", "Requests by route and status"),
                &["route", "status"],
            )
            .expect("metric"),
        );
        let latency = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new("gateway_request_duration_seconds", "Time to the response head, by route")
                    .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
                &["route"],
            )
            .expect("metric"),
        );
        let errors = register(
            &registry,
            IntCounterVec::new(Opts::new("gateway_errors_total", "Error answers by source"), &["source", "code"])
                .expect("metric"),
        );
        let rate_limited = register(
            &registry,
            IntCounterVec::new(Opts::new("gateway_rate_limited_total", "Requests refused by a rate limit"), &["scope"])
                .expect("metric"),
        );
        let rate_limit_fallback = register(
            &registry,
            IntGauge::new("gateway_rate_limit_local_fallback", "1 while Redis is unreachable and limits are local")
                .expect("metric"),
        );
        let rate_limit_fallback_checks = register(
            &registry,
            IntCounter::new("gateway_rate_limit_fallback_checks_total", "Rate-limit checks answered locally")
                .expect("metric"),
        );
        let auth_lookups = register(
            &registry,
            IntCounter::new("gateway_auth_cache_lookups_total", "Credential validations asked of the cache")
                .expect("metric"),
        );
        let auth_rpcs = register(
            &registry,
            IntCounter::new("gateway_auth_rpcs_total", "Calls made to the auth service").expect("metric"),
        );
        let auth_misses = register(
            &registry,
            IntCounter::new(
                "gateway_auth_cache_misses_total",
                "Credential validations the cache could not answer, each asked of the auth service",
            )
            .expect("metric"),
        );
        let auth_hit_ratio = register(
            &registry,
            prometheus::Gauge::new("gateway_auth_cache_hit_ratio", "Share of validations answered from the cache")
                .expect("metric"),
        );
        let breaker_open = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("gateway_upstream_breaker_open", "1 while an upstream's circuit breaker is open"),
                &["upstream"],
            )
            .expect("metric"),
        );
        let webhooks_pending = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("gateway_webhooks_pending", "Webhook events stored and not yet delivered"),
                &["source"],
            )
            .expect("metric"),
        );
        let proxied_ok = ProxiedOk {
            requests: requests.with_label_values(&[PROXIED_ROUTE, "200"]),
            latency: latency.with_label_values(&[PROXIED_ROUTE]),
        };
        Self {
            registry,
            proxied_ok,
            webhooks_pending,
            requests,
            latency,
            errors,
            rate_limited,
            rate_limit_fallback,
            rate_limit_fallback_checks,
            auth_lookups,
            auth_rpcs,
            auth_misses,
            auth_hit_ratio,
            breaker_open,
            seen_lookups: AtomicU64::new(0),
            seen_rpcs: AtomicU64::new(0),
            seen_misses: AtomicU64::new(0),
            seen_fallbacks: AtomicU64::new(0),
        }
    }

    /// Counts one answered request under its route label and status.
    pub fn count_request(&self, route: &str, status: u16, status_label: &str, elapsed: std::time::Duration) {
        if route == PROXIED_ROUTE && status == 200 {
            self.proxied_ok.requests.inc();
            self.proxied_ok.latency.observe(elapsed.as_secs_f64());
            return;
        }
        self.requests.with_label_values(&[route, status_label]).inc();
        self.latency.with_label_values(&[route]).observe(elapsed.as_secs_f64());
    }

    fn advance(counter: &IntCounter, seen: &AtomicU64, now: u64) {
        let before = seen.swap(now, Ordering::Relaxed);
        counter.inc_by(now.saturating_sub(before));
    }

    /// The text exposition, after folding in values read from elsewhere.
    pub fn render(&self, snapshot: Snapshot) -> String {
        Self::advance(&self.auth_lookups, &self.seen_lookups, snapshot.auth_lookups);
        Self::advance(&self.auth_rpcs, &self.seen_rpcs, snapshot.auth_rpcs);
        Self::advance(&self.auth_misses, &self.seen_misses, snapshot.auth_misses);
        Self::advance(&self.rate_limit_fallback_checks, &self.seen_fallbacks, snapshot.rate_limit_fallbacks);
        if snapshot.auth_lookups > 0 {
            let misses = snapshot.auth_misses.min(snapshot.auth_lookups);
            self.auth_hit_ratio.set(1.0 - misses as f64 / snapshot.auth_lookups as f64);
        }
        self.rate_limit_fallback.set(i64::from(snapshot.rate_limit_degraded));
        for breaker in snapshot.breakers {
            self.breaker_open.with_label_values(&[breaker.upstream.as_str()]).set(i64::from(breaker.open));
        }
        for (source, pending) in snapshot.webhooks_pending {
            self.webhooks_pending.with_label_values(&[source.as_str()]).set(i64::try_from(pending).unwrap_or(i64::MAX));
        }
        let mut families = self.registry.gather();
        families.extend(snapshot.families);
        let mut out = Vec::new();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
