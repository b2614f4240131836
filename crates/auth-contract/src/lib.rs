//! The Portcullis internal contract, linked by every service that authenticates through the
//! auth service: the generated gRPC types (`proto`), stable error codes (`codes`), the
//! auth events and what they revoke (`events`), the
//! transport-neutral [`AuthContext`], the one problem+json answer (`problem`), the
//! role and scope vocabulary (`role`, `scope`), the signed context headers a gateway forwards and a
//! downstream service verifies (`headers`, `extract`), and the cached validation client
//! (`client`).
//!
//! This crate never sees a signing secret for tokens and depends on no JWT library: it only
//! asks the auth service.

pub mod client;
pub mod codes;
pub mod context;
pub mod credential;
pub mod events;
pub mod extract;
pub mod headers;
pub mod problem;
pub mod role;
pub mod scope;

/// The generated messages, client and server of `portcullis.auth.v1`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("portcullis.auth.v1");

    /// The encoded descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/auth_descriptor.bin"));
}

pub use client::{AuthClient, ClientConfig, ClientError, Issued, Refusal};
pub use codes::ErrorCode;
pub use context::{AuthContext, ContextRef, Kind, Liveness, RateLimit};
pub use credential::{CredentialError, Presented};
pub use role::Role;
