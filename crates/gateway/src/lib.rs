//! The Portcullis gateway, the public edge (SPEC §6). This first slice is its configuration:
//! the environment ([`config`]), the routes file ([`routes`]) and the value types both parse
//! into ([`domain`]). The gateway authenticates only through `auth-contract` and never links
//! a JWT library (`cargo xtask ssot-check`).

pub mod client_ip;
pub mod config;
pub mod domain;
pub mod error;
pub mod routes;

pub use config::{GatewayConfig, Mode, SecretOverrides};
pub use routes::{RoutePolicy, RouteTable, RoutesError, RoutesFile, Webhook, WebhookProfile};
