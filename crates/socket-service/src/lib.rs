//! The Portcullis socket service (SPEC §7): WebSocket connections authenticated once, before
//! the upgrade, through the auth service; their context kept in Redis (or in process in
//! embedded mode); authorised per message from that stored context; and closed within
//! milliseconds when their session or credential is revoked.
//!
//! Its door: [`SocketConfig`] from the environment, [`Deps`], [`SocketService::new`] and
//! [`run`]. Inside, `service` is the handle everything shares, `app` wires it to the listener
//! and the bus and runs it; `http` serves the handshake, tickets and the internal publish
//! endpoint; `connection` is the one task per socket; `hub` is the node's registry of
//! connections and its fan-out; `store` keeps contexts and tickets; `protocol` is the JSON
//! spoken on the wire.

mod app;
mod config;
mod connection;
mod http;
mod hub;
mod metrics;
mod protocol;
mod service;
mod store;

pub use app::run;
pub use config::{Mode, SecretOverrides, SocketConfig, VARIABLES};
pub use service::{Deps, SocketService, StartError, Target};
