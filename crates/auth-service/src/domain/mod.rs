//! Domain types that validate by parsing: handlers and the service layer never see raw
//! emails, passwords or tokens.

pub mod allowlist;
pub mod credential;
pub mod device;
pub mod email;
pub mod jwt;
pub mod legacy_export;
pub mod name;
pub mod password;
pub mod role;
pub mod scope;
