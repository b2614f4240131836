//! Shared runtime plumbing for every Portcullis service: typed configuration helpers, the
//! injected clock, the event bus and rate-limit counters (each with an in-process and a Redis
//! implementation), client-IP resolution, the request-id rule, JSON bodies, telemetry and
//! graceful shutdown.

pub mod bus;
pub mod clock;
pub mod config;
pub mod counters;
pub mod duration;
pub mod env;
pub mod exit;
pub mod fs;
pub mod health;
pub mod media;
pub mod net;
pub mod origin;
pub mod otel;
pub mod rate;
pub mod redis;
pub mod request_id;
pub mod serve;
pub mod shutdown;
pub mod telemetry;

/// Failure of a shared dependency (Redis, the bus) that callers map to 503 `unavailable`.
#[derive(Debug, thiserror::Error)]
#[error("{dependency} unavailable: {message}")]
pub struct Unavailable {
    pub dependency: &'static str,
    pub message: String,
}

impl Unavailable {
    pub fn new(dependency: &'static str, err: impl std::fmt::Display) -> Self {
        Self { dependency, message: err.to_string() }
    }
}
