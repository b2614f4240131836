//! Route handlers, one module per area, each with the request and response bodies of its
//! routes as the OpenAPI document shows them: identity (`auth`), sessions and audit
//! (`sessions`), personal access tokens (`credentials`), clients and API keys (`clients`), SDK
//! sessions (`sdk`), administration (`admin`), and the operational endpoints at the root
//! (`system`). What several of them share is in `http/dto.rs`.

pub mod admin;
pub mod auth;
pub mod clients;
pub mod credentials;
pub mod internal;
pub mod sdk;
pub mod sessions;
pub mod system;
