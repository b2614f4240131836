//! [`Gateway`]: everything a request needs, built once at start-up and shared by every layer
//! and handler (cheap to clone).

use std::{
    collections::HashSet,
    ops::Deref,
    sync::{Arc, RwLock},
};

use auth_contract::{AuthClient, headers::ContextKey};
use deadpool_redis::Pool;
use platform::{bus::EventBus, clock::Clock, origin::OriginPattern};
use secrecy::ExposeSecret;

use crate::{
    config::GatewayConfig, metrics::Metrics, proxy::Proxy, ratelimit::RateLimiter, routing::RouteTable,
    webhooks::Webhooks,
};

/// What the gateway runs on besides its configuration.
#[derive(Clone)]
pub struct GatewayDeps {
    /// Events from the auth service (revocations, `auth:client.updated`).
    pub bus: Arc<dyn EventBus>,
    /// Shared rate limits; `None` keeps them in process.
    pub redis: Option<Pool>,
    /// Time, for the signed context's timestamp.
    pub clock: Arc<dyn Clock>,
}

/// Origins a preflight may come from: `CORS_ORIGIN` plus every client's allowed origins (the
/// latter replaced whenever `auth:client.updated` arrives).
#[derive(Default)]
pub struct CorsOrigins {
    configured: HashSet<String>,
    clients: RwLock<Arc<Vec<OriginPattern>>>,
}

impl CorsOrigins {
    pub fn new(configured: impl IntoIterator<Item = String>) -> Self {
        Self { configured: configured.into_iter().collect(), clients: RwLock::default() }
    }

    pub fn replace_clients(&self, origins: &[String]) {
        let patterns: Vec<OriginPattern> = origins.iter().filter_map(|o| OriginPattern::parse(o)).collect();
        *self.clients.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(patterns);
    }

    /// Whether `origin` is one of `CORS_ORIGIN` (the platform's own web apps).
    pub fn is_configured(&self, origin: &str) -> bool {
        platform::origin::Origin::parse(origin).is_ok_and(|origin| self.configured.contains(origin.as_str()))
    }

    /// Exact, canonical match (or a client's `https://*.domain` subdomain pattern); `null`
    /// and anything unparsable match nothing.
    pub fn allows(&self, origin: &str) -> bool {
        let Ok(origin) = platform::origin::Origin::parse(origin) else {
            return false;
        };
        if self.configured.contains(origin.as_str()) {
            return true;
        }
        let clients = self.clients.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        clients.iter().any(|pattern| pattern.matches(&origin))
    }
}

pub struct Inner {
    pub config: GatewayConfig,
    pub auth: AuthClient,
    pub context_key: ContextKey,
    pub proxy: Proxy,
    pub limiter: Arc<RateLimiter>,
    /// `AUTH_FAILURE_LIMIT`, reserved before every validation.
    pub auth_failures: platform::counters::FailureGuard,
    pub cors: CorsOrigins,
    pub metrics: Metrics,
    pub deps: GatewayDeps,
    pub webhooks: Arc<Webhooks>,
    /// The configured routes and the built-in ticket route.
    pub routes: RouteTable,
}

#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

impl Deref for Gateway {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Gateway {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    pub fn context_key_from(config: &GatewayConfig) -> ContextKey {
        ContextKey::new(config.context_signing_secret.expose_secret())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_origins_match_exactly_or_by_a_clients_subdomain_pattern() {
        let cors = CorsOrigins::new(["https://console.example.com".to_owned()]);
        assert!(cors.allows("https://console.example.com"));
        assert!(cors.allows("HTTPS://Console.Example.com:443"), "canonical form");
        assert!(!cors.allows("https://shop.example.org"), "no client origins yet");
        cors.replace_clients(&["https://shop.example.org".to_owned(), "https://*.tenant.example".to_owned()]);
        assert!(cors.allows("https://shop.example.org"));
        assert!(cors.allows("https://a.tenant.example"));
        for refused in [
            "https://tenant.example",
            "https://eviltenant.example",
            "https://shop.example.org.evil.net",
            "http://shop.example.org",
            "null",
            "",
            "not an origin",
        ] {
            assert!(!cors.allows(refused), "{refused}");
        }
        // A refresh replaces the list: a client's removed origin stops matching.
        cors.replace_clients(&[]);
        assert!(!cors.allows("https://shop.example.org"));
    }
}
