//! The shared test kit, plus what only the auth service's own tests may know: the JWT
//! secret, so they can forge tokens (no other crate may name it; `cargo xtask ssot-check`).

pub use testkit::*;

pub const JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Starts a service with this secret and extra environment (`SESSION_TIMEOUT_MINUTES`, …).
pub async fn spawn_app_with(backend: Backend, vars: &[(&str, &str)]) -> TestApp {
    let mut all = vec![("JWT_SECRET", JWT_SECRET)];
    all.extend_from_slice(vars);
    spawn_auth_with(backend, &all).await
}

/// Password hashes run so far, from the service's metrics (the hasher's own count).
pub fn hash_count(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("auth_password_hash_duration_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
