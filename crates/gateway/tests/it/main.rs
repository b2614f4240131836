//! The gateway's one integration-test binary: a real auth service, a gateway and a test
//! upstream on port 0, on SQLite always and on PostgreSQL + Redis when configured.

// Tests read the wall clock to build tokens, timestamps and unique names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod harness;

mod bad_input;
mod e2e;
mod edge;
mod headers;
mod socket;
