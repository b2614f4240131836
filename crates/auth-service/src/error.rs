//! The auth service's one error type. Each variant has a stable wire `code` (SPEC §4); the
//! HTTP surface maps it to a status and problem+json, later surfaces (gRPC) to their own
//! status with the same code.

use std::time::Duration;

/// A rejected field of an otherwise well-formed request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.to_owned(), message: message.into() }
    }
}

/// Why a presented token is not valid: its message, and the wire code it refines to
/// (`TOKEN_MALFORMED`, `SIGNATURE_INVALID` or `TOKEN_INVALID`), so no code is read back out
/// of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is larger than 8 KiB")]
    TooLarge,
    #[error("the token needs header extensions this service does not implement")]
    CriticalExtension,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token names no key")]
    NoKey,
    #[error("the token names an unknown key")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token's issuer is not accepted")]
    Issuer,
    #[error("the token's audience is not accepted")]
    Audience,
    #[error("the token is not of the expected type")]
    WrongType,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token names no session")]
    NoSession,
    #[error("the token's subject is not a user")]
    NotAUser,
    #[error("the token's session belongs to someone else")]
    ForeignSession,
    #[error("the token's user does not exist")]
    UnknownUser,
    #[error("the token's tenant does not match its session")]
    TenantMismatch,
    #[error("the token is unknown")]
    Unknown,
    #[error("the request presents more than one credential, and they differ")]
    Conflict,
    #[error("a credential header is not text")]
    NotText,
    #[error("the reference names no context")]
    NamesNothing,
}

#[cfg(test)]
mod tests {
    use auth_contract::ErrorCode;

    use super::*;

    #[test]
    fn the_cause_is_named_for_operators_only() {
        let err = Error::internal("pool timed out");
        assert_eq!(err.to_string(), "internal error");
        assert_eq!(err.with_cause(), "internal error: pool timed out");
        assert_eq!(Error::Unavailable("redis down".into()).with_cause(), "a dependency is unavailable: redis down");
        assert_eq!(Error::EmailTaken.with_cause(), Error::EmailTaken.to_string());
    }

    #[test]
    fn reasons_refine_the_wire_code() {
        assert_eq!(Error::TokenInvalid(Invalid::Signature).wire_code(), ErrorCode::SignatureInvalid);
        assert_eq!(Error::TokenInvalid(Invalid::Malformed).wire_code(), ErrorCode::TokenMalformed);
        assert_eq!(Error::TokenInvalid(Invalid::TooLarge).wire_code(), ErrorCode::TokenMalformed);
        for other in [Invalid::WrongType, Invalid::UnknownKey, Invalid::Issuer, Invalid::Conflict] {
            assert_eq!(Error::TokenInvalid(other).wire_code(), ErrorCode::TokenInvalid, "{other:?}");
            assert_eq!(Error::TokenInvalid(other).code(), "token_invalid");
        }
        assert_eq!(Error::TokenInvalid(Invalid::Signature).to_string(), "the token's signature is invalid");
    }
}

impl Invalid {
    pub fn wire_code(self) -> auth_contract::ErrorCode {
        use auth_contract::ErrorCode as C;
        match self {
            Self::Malformed | Self::TooLarge => C::TokenMalformed,
            Self::Signature => C::SignatureInvalid,
            _ => C::TokenInvalid,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    MalformedBody(String),
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than this route accepts")]
    BodyTooLarge,
    #[error("request is invalid")]
    Validation(Vec<FieldError>),
    #[error("email or password is incorrect")]
    InvalidCredentials,
    #[error("a credential is required")]
    TokenMissing,
    #[error("{0}")]
    TokenInvalid(Invalid),
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token has been revoked")]
    TokenRevoked,
    #[error("the session has ended")]
    SessionEnded,
    #[error("the session was idle for too long")]
    SessionIdle,
    #[error("the refresh token is unknown, expired or spent")]
    RefreshInvalid,
    #[error("this refresh token was just used by another request")]
    RefreshConflict,
    #[error("the API key is unknown or malformed")]
    KeyInvalid,
    #[error("the API key has been revoked or has expired")]
    KeyRevoked,
    #[error("this client does not allow requests from this IP address")]
    IpNotAllowed,
    #[error("this client does not allow requests from this origin")]
    OriginNotAllowed,
    #[error("{0}")]
    InsufficientScope(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("too many attempts; try again later")]
    RateLimited { retry_after: Duration },
    #[error("a dependency is unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl Error {
    /// The stable snake_case code clients branch on (the contract's table).
    pub fn code(&self) -> &'static str {
        auth_contract::codes::as_snake(self.wire_code())
    }

    /// The wire `ErrorCode` of this error: its problem code, status and gRPC status all come
    /// from the contract's table.
    pub fn wire_code(&self) -> auth_contract::ErrorCode {
        use auth_contract::ErrorCode as C;
        match self {
            Self::TokenInvalid(reason) => reason.wire_code(),
            Self::TokenMissing => C::TokenMissing,
            Self::TokenExpired => C::TokenExpired,
            Self::TokenRevoked => C::TokenRevoked,
            Self::SessionEnded => C::SessionEnded,
            Self::SessionIdle => C::SessionIdle,
            Self::KeyInvalid => C::KeyInvalid,
            Self::KeyRevoked => C::KeyRevoked,
            Self::IpNotAllowed => C::IpNotAllowed,
            Self::OriginNotAllowed => C::OriginNotAllowed,
            Self::InsufficientScope(_) => C::InsufficientScope,
            Self::Forbidden(_) => C::Forbidden,
            Self::InvalidCredentials => C::InvalidCredentials,
            Self::RefreshInvalid => C::RefreshInvalid,
            Self::RefreshConflict => C::RefreshConflict,
            Self::Validation(_) => C::ValidationFailed,
            Self::MalformedBody(_) => C::MalformedBody,
            Self::EmailTaken => C::EmailTaken,
            Self::UnsupportedMediaType => C::UnsupportedMediaType,
            Self::BodyTooLarge => C::BodyTooLarge,
            Self::RateLimited { .. } => C::RateLimited,
            Self::Unavailable(_) => C::Unavailable,
            Self::NotFound => C::NotFound,
            Self::MethodNotAllowed => C::MethodNotAllowed,
            Self::Internal(_) => C::Internal,
        }
    }

    /// Whether the error refuses a presented credential as invalid (counted by
    /// `AUTH_FAILURE_LIMIT`), as opposed to a missing one, a forbidden action or an outage.
    pub fn is_bad_credential(&self) -> bool {
        matches!(
            self,
            Self::TokenInvalid(_)
                | Self::TokenExpired
                | Self::TokenRevoked
                | Self::SessionEnded
                | Self::SessionIdle
                | Self::KeyInvalid
                | Self::KeyRevoked
        )
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }

    /// The error with its cause, for an operator's log or a start-up failure (a client's
    /// answer never carries the cause of an internal error or an unavailable dependency).
    pub fn with_cause(&self) -> String {
        match self {
            Self::Internal(cause) | Self::Unavailable(cause) => format!("{self}: {cause}"),
            other => other.to_string(),
        }
    }
}

impl From<auth_contract::CredentialError> for Error {
    /// The contract's reading of a credential (SPEC §6): missing, empty or not Bearer is
    /// `token_missing`; conflicting or unreadable is `token_invalid`.
    fn from(err: auth_contract::CredentialError) -> Self {
        use auth_contract::CredentialError as E;
        match err {
            E::Missing | E::NotBearer | E::Empty => Self::TokenMissing,
            E::Conflict => Self::TokenInvalid(Invalid::Conflict),
            E::NotText => Self::TokenInvalid(Invalid::NotText),
        }
    }
}

impl From<platform::Unavailable> for Error {
    fn from(err: platform::Unavailable) -> Self {
        Self::Unavailable(err.to_string())
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(err: crate::store::StoreError) -> Self {
        match err {
            crate::store::StoreError::Unavailable(m) => Self::Unavailable(m),
            crate::store::StoreError::Conflict(_) | crate::store::StoreError::Other(_) => {
                Self::Internal(err.to_string())
            }
        }
    }
}
