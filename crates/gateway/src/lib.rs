//! The Portcullis gateway, the public edge (SPEC §6): configuration ([`config`], [`routes`],
//! [`domain`]), the middleware ([`layers`]), the reverse proxy ([`proxy`]), rate limits
//! ([`ratelimit`]), the built-in routes ([`handlers`]), webhook ingestion ([`webhooks`]) and
//! start-up ([`app`]). The gateway authenticates only through `auth-contract` and never links
//! a JWT library (`cargo xtask ssot-check`).

pub mod app;
pub mod client_ip;
pub mod config;
pub mod domain;
pub mod error;
pub mod handlers;
pub mod layers;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod routes;
pub mod state;
pub mod webhooks;

pub use config::{GatewayConfig, Mode, SecretOverrides};
pub use routes::{RoutePolicy, RouteTable, RoutesError, RoutesFile, Webhook, WebhookProfile};
pub use state::{Gateway, GatewayDeps};
