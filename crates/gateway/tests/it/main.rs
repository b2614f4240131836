//! The gateway's one integration-test binary: a real auth service, a gateway and a test
//! upstream on port 0, on SQLite always and on PostgreSQL + Redis when configured.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod bad_input;
mod e2e;
mod edge;
mod headers;
mod socket;
mod webhooks;
