//! Every wire error code of SPEC §4 in one table: its HTTP status and problem `code`, the
//! tonic status a failing RPC answers with, and the header rules of its answer
//! (`WWW-Authenticate`, `Retry-After`). The gRPC `ErrorCode` enum carries the same names
//! upper-cased, with two finer gRPC-only values (`TOKEN_MALFORMED`, `SIGNATURE_INVALID`: a
//! Bearer credential that is malformed or whose signature fails, both `token_invalid` over
//! HTTP) and one spelled apart (`WEBHOOK_SIGNATURE_INVALID`, HTTP `signature_invalid`, since
//! `SIGNATURE_INVALID` was taken by the Bearer case first). `upgrade_required` (426, a plain
//! GET on the socket service's `/ws`) is the one code beyond SPEC §4's table.

pub use crate::proto::ErrorCode;

/// What a 401 says in `WWW-Authenticate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// Not a 401, or a 401 about no Bearer credential (a webhook's signature): no header.
    None,
    /// `Bearer`: no credential was presented (or a login's password was wrong).
    Bearer,
    /// `Bearer error="invalid_token"`: the presented credential was refused.
    InvalidToken,
}

/// How one code is answered on every surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The HTTP status.
    pub status: u16,
    /// The problem+json `code`.
    pub code: &'static str,
    /// The tonic status of an RPC that fails with this code.
    pub grpc: tonic::Code,
    pub challenge: Challenge,
    /// Whether the answer carries `Retry-After` (every 429 and 503).
    pub retry_after: bool,
}

const fn rule(status: u16, code: &'static str, grpc: tonic::Code) -> Rule {
    let challenge = if status == 401 { Challenge::InvalidToken } else { Challenge::None };
    Rule { status, code, grpc, challenge, retry_after: status == 429 || status == 503 }
}

/// The table.
pub fn rule_of(code: ErrorCode) -> Rule {
    use ErrorCode as E;
    use tonic::Code as G;
    match code {
        E::MalformedBody => rule(400, "malformed_body", G::InvalidArgument),
        E::MalformedPath => rule(400, "malformed_path", G::InvalidArgument),
        E::InvalidCredentials => {
            Rule { challenge: Challenge::Bearer, ..rule(401, "invalid_credentials", G::Unauthenticated) }
        }
        E::TokenMissing => Rule { challenge: Challenge::Bearer, ..rule(401, "token_missing", G::Unauthenticated) },
        E::TokenInvalid | E::TokenMalformed | E::SignatureInvalid => rule(401, "token_invalid", G::Unauthenticated),
        E::TokenExpired => rule(401, "token_expired", G::Unauthenticated),
        E::TokenRevoked => rule(401, "token_revoked", G::Unauthenticated),
        E::SessionEnded => rule(401, "session_ended", G::Unauthenticated),
        E::SessionIdle => rule(401, "session_idle", G::Unauthenticated),
        E::KeyInvalid => rule(401, "key_invalid", G::Unauthenticated),
        E::KeyRevoked => rule(401, "key_revoked", G::Unauthenticated),
        E::RefreshInvalid => rule(401, "refresh_invalid", G::Unauthenticated),
        E::WebhookSignatureInvalid => {
            Rule { challenge: Challenge::None, ..rule(401, "signature_invalid", G::Unauthenticated) }
        }
        E::IpNotAllowed => rule(403, "ip_not_allowed", G::PermissionDenied),
        E::OriginNotAllowed => rule(403, "origin_not_allowed", G::PermissionDenied),
        E::InsufficientScope => rule(403, "insufficient_scope", G::PermissionDenied),
        E::Forbidden => rule(403, "forbidden", G::PermissionDenied),
        E::NotFound => rule(404, "not_found", G::NotFound),
        E::MethodNotAllowed => rule(405, "method_not_allowed", G::Unimplemented),
        E::EmailTaken => rule(409, "email_taken", G::AlreadyExists),
        E::RefreshConflict => rule(409, "refresh_conflict", G::Aborted),
        E::Replayed => rule(409, "replayed", G::AlreadyExists),
        E::BodyTooLarge => rule(413, "body_too_large", G::InvalidArgument),
        E::UnsupportedMediaType => rule(415, "unsupported_media_type", G::InvalidArgument),
        E::UpgradeRequired => rule(426, "upgrade_required", G::FailedPrecondition),
        E::ValidationFailed => rule(422, "validation_failed", G::InvalidArgument),
        E::RateLimited => rule(429, "rate_limited", G::ResourceExhausted),
        E::Internal | E::Unspecified => rule(500, "internal", G::Internal),
        E::BadGateway => rule(502, "bad_gateway", G::Unavailable),
        E::Unavailable => rule(503, "unavailable", G::Unavailable),
        E::UpstreamTimeout => rule(504, "upstream_timeout", G::DeadlineExceeded),
    }
}

/// The snake_case form used in problem+json `code`.
pub fn as_snake(code: ErrorCode) -> &'static str {
    rule_of(code).code
}

/// The HTTP status a code answers with.
pub fn http_status(code: ErrorCode) -> u16 {
    rule_of(code).status
}

/// The status of an RPC failing with `code`: the table's tonic code, the message prefixed
/// with the code's name so a caller can recover it (`TOKEN_MISSING: …`).
pub fn grpc_status(code: ErrorCode, message: &str) -> tonic::Status {
    tonic::Status::new(rule_of(code).grpc, format!("{}: {message}", code.as_str_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value the enum has, so a new one cannot miss the table's tests.
    fn every_code() -> impl Iterator<Item = ErrorCode> {
        (0..64).filter_map(|n| ErrorCode::try_from(n).ok())
    }

    #[test]
    fn grpc_names_are_the_http_codes_upper_cased_but_for_the_finer_ones() {
        let finer = [ErrorCode::Unspecified, ErrorCode::TokenMalformed, ErrorCode::SignatureInvalid];
        for code in every_code() {
            if code == ErrorCode::WebhookSignatureInvalid {
                assert_eq!(as_snake(code), "signature_invalid");
            } else if !finer.contains(&code) {
                assert_eq!(code.as_str_name().to_ascii_lowercase(), as_snake(code), "{code:?}");
            }
        }
        assert_eq!(every_code().count(), 34);
    }

    #[test]
    fn the_spec_table() {
        for (code, status) in [
            (ErrorCode::MalformedBody, 400),
            (ErrorCode::MalformedPath, 400),
            (ErrorCode::InvalidCredentials, 401),
            (ErrorCode::TokenRevoked, 401),
            (ErrorCode::WebhookSignatureInvalid, 401),
            (ErrorCode::IpNotAllowed, 403),
            (ErrorCode::NotFound, 404),
            (ErrorCode::MethodNotAllowed, 405),
            (ErrorCode::EmailTaken, 409),
            (ErrorCode::Replayed, 409),
            (ErrorCode::BodyTooLarge, 413),
            (ErrorCode::UnsupportedMediaType, 415),
            (ErrorCode::ValidationFailed, 422),
            (ErrorCode::RateLimited, 429),
            (ErrorCode::Internal, 500),
            (ErrorCode::BadGateway, 502),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::UpstreamTimeout, 504),
        ] {
            assert_eq!(http_status(code), status, "{code:?}");
        }
    }

    #[test]
    fn header_rules_follow_the_status() {
        for code in every_code() {
            let rule = rule_of(code);
            assert_eq!(rule.retry_after, matches!(rule.status, 429 | 503), "{code:?}");
            assert_eq!(
                rule.challenge == Challenge::None,
                rule.status != 401 || code == ErrorCode::WebhookSignatureInvalid
            );
        }
        assert_eq!(rule_of(ErrorCode::TokenMissing).challenge, Challenge::Bearer);
        assert_eq!(rule_of(ErrorCode::TokenExpired).challenge, Challenge::InvalidToken);
        let status = grpc_status(ErrorCode::TokenMissing, "a service token is required");
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unauthenticated, "TOKEN_MISSING: a service token is required")
        );
    }
}
