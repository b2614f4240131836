//! Route handlers, one module per area: identity (`auth`), sessions and audit (`sessions`),
//! personal access tokens (`credentials`), clients and API keys (`clients`), SDK sessions
//! (`sdk`), administration (`admin`), and the operational endpoints at the root (`system`).

pub mod admin;
pub mod auth;
pub mod clients;
pub mod credentials;
pub mod internal;
pub mod sdk;
pub mod sessions;
pub mod system;
