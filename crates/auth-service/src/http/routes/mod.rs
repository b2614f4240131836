//! Route handlers, one module per area: identity (`auth`), sessions and audit (`sessions`),
//! and the operational endpoints at the root (`system`).

pub mod auth;
pub mod sessions;
pub mod system;
