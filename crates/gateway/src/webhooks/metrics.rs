//! What an operator watches of the webhook pipeline, per source (SPEC §6): events received,
//! refused (by reason), stored, delivered, retried and dead-lettered, and the age of the
//! oldest event this instance holds or has in flight. The queue depth is read at scrape time
//! (`gateway_webhooks_pending`). Exposed on the gateway's `/metrics`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry, proto::MetricFamily};

/// A refusal's label: the problem code, or `replay` for a delivery already received.
pub const REPLAY: &str = "replay";

/// The pipeline's counters, in a registry of their own that `/metrics` gathers with the rest.
pub struct WebhookMetrics {
    registry: Registry,
    received: IntCounterVec,
    refused: IntCounterVec,
    stored: IntCounterVec,
    deliveries: IntCounterVec,
    oldest: IntGaugeVec,
    /// Per source, the acceptance time (unix seconds) of the oldest event its dispatcher holds
    /// or has in flight; 0 when none.
    held_since: BTreeMap<String, Arc<AtomicI64>>,
}

/// What became of one delivery attempt, as counted.
#[derive(Debug, Clone, Copy)]
pub enum Attempt {
    Delivered,
    Retried,
    DeadLettered,
}

impl Attempt {
    fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

impl WebhookMetrics {
    #[allow(clippy::expect_used)] // Static metric definitions: a failure is a programming error at start-up.
    pub fn new<'a>(sources: impl IntoIterator<Item = &'a String>) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            let _ = registry.register(Box::new(metric.clone()));
            metric
        };
        let received = counter("gateway_webhook_events_received_total", "Webhook deliveries received", &["source"]);
        let refused = counter(
            "gateway_webhook_events_refused_total",
            "Webhook deliveries refused, by reason (the problem code, or replay)",
            &["source", "reason"],
        );
        let stored =
            counter("gateway_webhook_events_stored_total", "Webhook events stored and answered 202", &["source"]);
        let deliveries = counter(
            "gateway_webhook_deliveries_total",
            "Webhook delivery attempts by outcome: delivered, retried (deferred for the next wait) or dead_lettered",
            &["source", "outcome"],
        );
        let oldest = IntGaugeVec::new(
            Opts::new(
                "gateway_webhook_oldest_event_age_seconds",
                "Age of the oldest webhook event this instance holds or has in flight (0: none)",
            ),
            &["source"],
        )
        .expect("metric");
        let _ = registry.register(Box::new(oldest.clone()));
        let held_since = sources.into_iter().map(|s| (s.clone(), Arc::new(AtomicI64::new(0)))).collect();
        Self { registry, received, refused, stored, deliveries, oldest, held_since }
    }

    pub fn received(&self, source: &str) {
        self.received.with_label_values(&[source]).inc();
    }

    pub fn refused(&self, source: &str, reason: &str) {
        self.refused.with_label_values(&[source, reason]).inc();
    }

    pub fn stored(&self, source: &str) {
        self.stored.with_label_values(&[source]).inc();
    }

    pub fn delivery(&self, source: &str, outcome: Attempt) {
        self.deliveries.with_label_values(&[source, outcome.label()]).inc();
    }

    /// Where the source's dispatcher writes the acceptance time of its oldest held event.
    pub fn held_since(&self, source: &str) -> Arc<AtomicI64> {
        self.held_since.get(source).cloned().unwrap_or_default()
    }

    /// The families to expose, the oldest-event ages computed for `now` (unix seconds).
    pub fn gather(&self, now: i64) -> Vec<MetricFamily> {
        for (source, since) in &self.held_since {
            let since = since.load(Ordering::Relaxed);
            let age = if since > 0 { now.saturating_sub(since).max(0) } else { 0 };
            self.oldest.with_label_values(&[source.as_str()]).set(age);
        }
        self.registry.gather()
    }
}

/// A multiset of acceptance times, for the oldest one held.
#[derive(Default)]
pub struct Ages(BTreeMap<i64, usize>);

impl Ages {
    pub fn add(&mut self, at: i64) {
        *self.0.entry(at).or_default() += 1;
    }

    pub fn remove(&mut self, at: i64) {
        if let Some(count) = self.0.get_mut(&at) {
            *count -= 1;
            if *count == 0 {
                self.0.remove(&at);
            }
        }
    }

    /// The oldest, 0 when empty.
    pub fn oldest(&self) -> i64 {
        self.0.keys().next().copied().unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ages_track_the_oldest_held() {
        let mut ages = Ages::default();
        assert_eq!(ages.oldest(), 0);
        ages.add(30);
        ages.add(10);
        ages.add(10);
        assert_eq!(ages.oldest(), 10);
        ages.remove(10);
        assert_eq!(ages.oldest(), 10, "one of the two is still held");
        ages.remove(10);
        assert_eq!(ages.oldest(), 30);
        ages.remove(30);
        assert_eq!(ages.oldest(), 0);
    }

    fn text(metrics: &WebhookMetrics, now: i64) -> String {
        use prometheus::Encoder as _;
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&metrics.gather(now), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_oldest_age_is_computed_at_scrape_time() {
        let metrics = WebhookMetrics::new(&["chat".to_owned()]);
        metrics.held_since("chat").store(1_000, Ordering::Relaxed);
        metrics.refused("chat", REPLAY);
        metrics.delivery("chat", Attempt::Retried);
        let text = text(&metrics, 1_042);
        assert!(text.contains("gateway_webhook_oldest_event_age_seconds{source=\"chat\"} 42"), "{text}");
        assert!(text.contains("gateway_webhook_events_refused_total{reason=\"replay\",source=\"chat\"} 1"), "{text}");
        assert!(text.contains("gateway_webhook_deliveries_total{outcome=\"retried\",source=\"chat\"} 1"), "{text}");
        metrics.held_since("chat").store(0, Ordering::Relaxed);
        let text = self::text(&metrics, 2_000);
        assert!(text.contains("gateway_webhook_oldest_event_age_seconds{source=\"chat\"} 0"), "nothing held: {text}");
    }
}
