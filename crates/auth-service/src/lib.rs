//! The Portcullis auth service: the single source of truth for identity and every
//! credential. The library is what the `auth-service` binary, the all-in-one `portcullis`
//! binary and the tests share; `app::run` is the one way to serve it.
//!
//! Layout: `domain/` (types that validate by parsing: email, password, credentials, JWT key
//! ring), `store/` (the storage trait, PostgreSQL and SQLite), `service/` (the operations),
//! `http/` (routes, extractors, problem+json), `events` (bus channels), `metrics`.

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod service;
pub mod store;

pub use app::{Backends, Listeners, bind, build, run};
pub use config::{AuthConfig, Mode};
pub use error::Error;
pub use service::{AuthService, Deps};
