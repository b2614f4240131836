//! Stable error codes shared by every surface: snake_case in HTTP problem bodies, the same
//! names upper-cased in the gRPC `ErrorCode` enum.

pub use crate::proto::ErrorCode;

/// The snake_case form used in problem+json `code`.
pub fn as_snake(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unspecified => "unspecified",
        ErrorCode::TokenMissing => "token_missing",
        ErrorCode::TokenMalformed | ErrorCode::TokenInvalid | ErrorCode::SignatureInvalid => "token_invalid",
        ErrorCode::TokenExpired => "token_expired",
        ErrorCode::TokenRevoked => "token_revoked",
        ErrorCode::SessionEnded => "session_ended",
        ErrorCode::SessionIdle => "session_idle",
        ErrorCode::KeyInvalid => "key_invalid",
        ErrorCode::KeyRevoked => "key_revoked",
        ErrorCode::IpNotAllowed => "ip_not_allowed",
        ErrorCode::OriginNotAllowed => "origin_not_allowed",
        ErrorCode::InsufficientScope => "insufficient_scope",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::RefreshInvalid => "refresh_invalid",
        ErrorCode::RefreshConflict => "refresh_conflict",
        ErrorCode::ValidationFailed => "validation_failed",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Internal => "internal",
        ErrorCode::NotFound => "not_found",
    }
}

/// The HTTP status a code answers with.
pub fn http_status(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::IpNotAllowed | ErrorCode::OriginNotAllowed | ErrorCode::InsufficientScope | ErrorCode::Forbidden => {
            403
        }
        ErrorCode::RefreshConflict => 409,
        ErrorCode::ValidationFailed => 422,
        ErrorCode::RateLimited => 429,
        ErrorCode::Unavailable => 503,
        ErrorCode::Internal | ErrorCode::Unspecified => 500,
        ErrorCode::NotFound => 404,
        _ => 401,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_names_are_the_http_codes_upper_cased() {
        for code in
            [ErrorCode::TokenExpired, ErrorCode::KeyRevoked, ErrorCode::OriginNotAllowed, ErrorCode::SessionIdle]
        {
            assert_eq!(code.as_str_name().to_ascii_lowercase(), as_snake(code));
        }
        assert_eq!(http_status(ErrorCode::IpNotAllowed), 403);
        assert_eq!(http_status(ErrorCode::TokenRevoked), 401);
    }
}
