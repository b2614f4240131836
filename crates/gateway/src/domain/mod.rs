//! Value types of the gateway's configuration that validate by parsing, so the server never
//! sees a raw string from the environment or the routes file.

mod limit_mode;
mod policy;
mod upstream;

pub use limit_mode::LimitMode;
pub use platform::{origin::Origin, rate::RateLimit};
pub use policy::{CredentialKind, CredentialKinds, Role, RouteAuth, Scope, parse_byte_size};
pub use upstream::Upstream;
