//! The Portcullis gateway, the public edge (SPEC §6). Its door: [`GatewayConfig`] read from
//! the environment, [`GatewayDeps`] (the event bus, Redis, the clock), [`start`] to build a
//! [`Gateway`] and [`run`] to serve it until shutdown. Inside: configuration (`config`, the
//! routes file and webhook tables; `domain`), the route table (`routing`), one request's
//! stages in order (`pipeline`), the built-in routes (`http`), the reverse proxy (`proxy`),
//! rate limits (`ratelimit`) and webhook ingestion (`webhooks`). The gateway authenticates
//! only through `auth-contract` and never links a JWT library (`cargo xtask ssot-check`).

mod app;
mod config;
mod domain;
mod error;
mod http;
mod metrics;
mod pipeline;
mod proxy;
mod ratelimit;
mod routing;
mod state;
mod webhooks;

pub use app::{run, run_on_threads, start};
pub use config::{
    GatewayConfig, Mode, SecretOverrides, VARIABLES, WebhookStore,
    routes::{RoutesError, RoutesFile},
};
pub use http::exposed_path;
pub use state::{Gateway, GatewayDeps};
pub use webhooks::{
    admin::DeadLetterAdmin,
    outbox::{DeadLetter, StoredEvent},
};
