//! Prometheus metrics of the socket service: open connections, messages, closes by code,
//! revocations, refused handshakes and the background re-checks.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub connections_open: IntGauge,
    pub connections_total: IntCounter,
    /// Messages by direction (`in`, `out`).
    pub messages: IntCounterVec,
    /// Outbound messages dropped because a client did not keep up.
    pub dropped: IntCounter,
    /// Closes by close code.
    pub closes: IntCounterVec,
    /// Connections closed because their session or credential was revoked.
    pub revocations: IntCounter,
    /// From a revocation's `occurred_at` to this node having applied it (its connections
    /// asked to close): the revocation lag an operator alerts on.
    pub revocation_lag: Histogram,
    /// Handshakes refused, by HTTP status.
    pub refused_handshakes: IntCounterVec,
    /// Background re-checks of open connections' contexts, by outcome (`live`, `ended`,
    /// `unavailable`).
    pub rechecks: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn registered<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are fixed and distinct, so registration into a fresh registry cannot collide.
    if let Err(err) = registry.register(Box::new(metric.clone())) {
        tracing::error!(error = %err, "metric not registered");
    }
    metric
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        Ok(Self {
            connections_open: registered(
                &registry,
                IntGauge::new("socket_connections_open", "WebSocket connections open on this node")?,
            ),
            connections_total: registered(
                &registry,
                IntCounter::new("socket_connections_total", "WebSocket connections accepted")?,
            ),
            messages: registered(
                &registry,
                IntCounterVec::new(Opts::new("socket_messages_total", "Messages by direction"), &["direction"])?,
            ),
            dropped: registered(
                &registry,
                IntCounter::new("socket_messages_dropped_total", "Outbound messages dropped for slow clients")?,
            ),
            closes: registered(
                &registry,
                IntCounterVec::new(Opts::new("socket_closes_total", "Connections closed, by close code"), &["code"])?,
            ),
            revocations: registered(
                &registry,
                IntCounter::new("socket_revocations_total", "Connections closed because their session ended")?,
            ),
            revocation_lag: registered(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "socket_revocation_lag_seconds",
                        "From a revocation event's occurred_at to this node applying it",
                    )
                    .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                )?,
            ),
            refused_handshakes: registered(
                &registry,
                IntCounterVec::new(Opts::new("socket_handshakes_refused_total", "Refused handshakes"), &["status"])?,
            ),
            rechecks: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new("socket_context_rechecks_total", "Open connections' contexts re-checked, by outcome"),
                    &["outcome"],
                )?,
            ),
            registry,
        })
    }

    pub fn closed(&self, code: u16) {
        self.closes.with_label_values(&[code.to_string().as_str()]).inc();
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %err, "metrics not encoded");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
