//! The auth service's one integration-test binary: each module drives a real service on
//! port 0 over HTTP, on SQLite + the in-process bus always and on PostgreSQL + Redis when
//! `DATABASE_URL` and `REDIS_URL` are set (and in CI, where their absence fails the run).

// Tests read the wall clock to build tokens, timestamps and unique names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod helpers;
use testkit::on_both_backends;
mod table;

mod bad_input;
mod bad_input_credentials;
mod bus;
mod conformance;
mod contract_client;
mod credentials;
mod faults;
mod flows;
mod forward_auth;
mod grpc;
mod legacy_pats;
mod limits;
mod listeners;
mod schema;
mod storage;
