//! The Portcullis auth service: the single source of truth for identity and every
//! credential. The library is what the `auth-service` binary, the all-in-one `portcullis`
//! binary, `cargo xtask` and the tests share. Its door: [`AuthConfig`] from the environment,
//! [`Backends::connect`] for the [`Deps`] (the `store` trait and its implementations are
//! public as part of them), [`AuthService::new`], [`bind`] and [`run`]; operators' work
//! ([`AuthService::cleanup`], [`AuthService::set_role_as_operator`],
//! [`AuthService::import_legacy_pats`] with its report in [`legacy_import`]) goes through the
//! service too, and [`store::migrate`] applies the migrations alone.
//!
//! Layout: `domain/` (types that validate by parsing: email, password, credentials, JWT key
//! ring), `store/` (the storage trait, PostgreSQL and SQLite), `service/` (the operations),
//! `http/` (routes, extractors, problem+json), `grpc/`, `events` (bus channels), `metrics`.

mod app;
mod config;
mod domain;
mod error;
mod events;
mod grpc;
mod http;
mod metrics;
pub mod rotation;
mod service;
pub mod store;

pub use app::{Backends, Listeners, SQLITE_FILE, bind, build, run};
pub use config::{AuthConfig, Backend, Mode, VARIABLES};
pub use error::Error;
pub use grpc::MAX_BATCH;
pub use http::openapi_json;
pub use service::{AuthService, ClientMeta, Deps};

/// The auth service's own credential formats (opaque credentials and their hashes, the JWT
/// key ring), for the test suites and benchmarks that forge or time them; nothing else needs
/// them, since every other service reads credentials through `auth-contract`.
pub mod tokens {
    pub use crate::domain::{
        credential::{Credential, Kind, sha256_hex},
        jwt::{KeyRing, NewToken, TokenType, kid_for},
    };
}

/// What an import of legacy personal access tokens ([`AuthService::import_legacy_pats`])
/// reports, line by line, and why it may stop.
pub mod legacy_import {
    pub use crate::service::import::{
        ExportError, ImportError, ImportFile, ImportReason, ImportReport, ImportedLine, Outcome,
    };
}
