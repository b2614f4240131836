//! [`AuthContext`]: who a request is, as the auth service decided. Transport-neutral; the
//! gRPC message and the signed headers convert to and from it.

use std::fmt;

use crate::{ErrorCode, proto, role::Role, scope::Scopes};

/// The kind of credential a request was authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Pat,
    Sdk,
    ApiKey,
    Service,
}

impl Kind {
    /// The `X-Auth-Kind` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Pat => "pat",
            Self::Sdk => "sdk",
            Self::ApiKey => "api_key",
            Self::Service => "service",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(Self::User),
            "pat" => Some(Self::Pat),
            "sdk" => Some(Self::Sdk),
            "api_key" => Some(Self::ApiKey),
            "service" => Some(Self::Service),
            _ => None,
        }
    }

    pub fn to_proto(self) -> proto::CredentialKind {
        match self {
            Self::User => proto::CredentialKind::User,
            Self::Pat => proto::CredentialKind::Pat,
            Self::Sdk => proto::CredentialKind::Sdk,
            Self::ApiKey => proto::CredentialKind::ApiKey,
            Self::Service => proto::CredentialKind::Service,
        }
    }

    pub fn from_proto(kind: proto::CredentialKind) -> Option<Self> {
        match kind {
            proto::CredentialKind::User => Some(Self::User),
            proto::CredentialKind::Pat => Some(Self::Pat),
            proto::CredentialKind::Sdk => Some(Self::Sdk),
            proto::CredentialKind::ApiKey => Some(Self::ApiKey),
            proto::CredentialKind::Service => Some(Self::Service),
            proto::CredentialKind::Unspecified => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tenant's own request budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u64,
    pub per_ms: u64,
}

impl From<RateLimit> for platform::rate::RateLimit {
    fn from(limit: RateLimit) -> Self {
        Self { requests: limit.requests, per: std::time::Duration::from_millis(limit.per_ms) }
    }
}

/// Who a request is. Optional ids are `None` when they do not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthContext {
    pub subject: String,
    pub kind: Kind,
    pub user_id: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub session_id: Option<String>,
    pub credential_id: Option<String>,
    /// A user's role; `None` for kinds without one (SDK users, API keys, services) and for a
    /// role this version does not know.
    pub role: Option<Role>,
    pub scopes: Scopes,
    /// Unix seconds; `None` when the credential does not expire.
    pub expires_at: Option<i64>,
    pub rate_limit: Option<RateLimit>,
}

fn some(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

impl AuthContext {
    /// Whether the context grants `required`, by the one rule of [`crate::scope`] (`*` grants
    /// all, `orders:*` grants `orders:read`); a `required` that is not a scope is granted by
    /// nothing.
    pub fn has_scope(&self, required: &str) -> bool {
        crate::scope::grants(self.scopes.iter(), required)
    }

    pub fn to_proto(&self) -> proto::AuthContext {
        proto::AuthContext {
            subject: self.subject.clone(),
            kind: self.kind.to_proto().into(),
            user_id: self.user_id.clone().unwrap_or_default(),
            tenant_id: self.tenant_id.clone().unwrap_or_default(),
            client_id: self.client_id.clone().unwrap_or_default(),
            session_id: self.session_id.clone().unwrap_or_default(),
            credential_id: self.credential_id.clone().unwrap_or_default(),
            role: self.role.map(|role| role.as_str().to_owned()).unwrap_or_default(),
            scopes: self.scopes.to_vec(),
            expires_at: self.expires_at.unwrap_or(0),
            rate_limit: self.rate_limit.map(|r| proto::RateLimit { requests: r.requests, per_ms: r.per_ms }),
        }
    }

    /// The ids that name this context for `CheckContext`.
    pub fn reference(&self) -> ContextRef {
        ContextRef {
            kind: self.kind,
            credential_id: self.credential_id.clone(),
            session_id: self.session_id.clone(),
            user_id: self.user_id.clone(),
            client_id: self.client_id.clone(),
        }
    }

    /// `None` when the message names no valid kind. A role or scope this version does not
    /// know is dropped (it grants nothing); the context is not refused for it.
    pub fn from_proto(message: &proto::AuthContext) -> Option<Self> {
        let kind = Kind::from_proto(proto::CredentialKind::try_from(message.kind).ok()?)?;
        Some(Self {
            subject: message.subject.clone(),
            kind,
            user_id: some(&message.user_id),
            tenant_id: some(&message.tenant_id),
            client_id: some(&message.client_id),
            session_id: some(&message.session_id),
            credential_id: some(&message.credential_id),
            role: Role::from_wire(&message.role),
            scopes: Scopes::from_wire(message.scopes.iter().map(String::as_str)),
            expires_at: (message.expires_at != 0).then_some(message.expires_at),
            rate_limit: message.rate_limit.map(|r| RateLimit { requests: r.requests, per_ms: r.per_ms }),
        })
    }
}

/// A context validated earlier, named by its ids only: what `CheckContext` asks about, so
/// that a long-lived connection is re-checked without anyone keeping its credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContextRef {
    pub kind: Kind,
    pub credential_id: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
}

impl ContextRef {
    pub fn to_proto(&self) -> proto::ContextRef {
        proto::ContextRef {
            kind: self.kind.to_proto().into(),
            credential_id: self.credential_id.clone().unwrap_or_default(),
            session_id: self.session_id.clone().unwrap_or_default(),
            user_id: self.user_id.clone().unwrap_or_default(),
            client_id: self.client_id.clone().unwrap_or_default(),
        }
    }

    /// `None` when the message names no valid kind.
    pub fn from_proto(message: &proto::ContextRef) -> Option<Self> {
        let kind = Kind::from_proto(proto::CredentialKind::try_from(message.kind).ok()?)?;
        Some(Self {
            kind,
            credential_id: some(&message.credential_id),
            session_id: some(&message.session_id),
            user_id: some(&message.user_id),
            client_id: some(&message.client_id),
        })
    }
}

/// What `CheckContext` says of one [`ContextRef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Live,
    /// No longer valid, and why (`TOKEN_EXPIRED` when merely past its expiry).
    Ended(ErrorCode),
}

impl Liveness {
    pub fn from_proto(check: &proto::ContextCheck) -> Self {
        if check.valid {
            Self::Live
        } else {
            Self::Ended(ErrorCode::try_from(check.error_code).unwrap_or(ErrorCode::TokenInvalid))
        }
    }

    pub fn to_proto(self) -> proto::ContextCheck {
        match self {
            Self::Live => proto::ContextCheck { valid: true, error_code: ErrorCode::Unspecified.into() },
            Self::Ended(code) => proto::ContextCheck { valid: false, error_code: code.into() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(scopes: &[&str]) -> AuthContext {
        AuthContext {
            subject: "u1".into(),
            kind: Kind::Pat,
            user_id: Some("u1".into()),
            tenant_id: None,
            client_id: None,
            session_id: None,
            credential_id: Some("p1".into()),
            role: Some(Role::Member),
            scopes: Scopes::from_wire(scopes.iter().copied()),
            expires_at: None,
            rate_limit: Some(RateLimit { requests: 10, per_ms: 1000 }),
        }
    }

    #[test]
    fn proto_round_trip() {
        let c = context(&["orders:read"]);
        assert_eq!(AuthContext::from_proto(&c.to_proto()), Some(c));
    }

    #[test]
    fn unknown_roles_and_scopes_from_a_newer_peer_grant_nothing_but_keep_the_context() {
        let mut message = context(&["orders:read"]).to_proto();
        message.role = "auditor".into();
        message.scopes = vec!["orders:read".into(), "Orders::Read".into()];
        let decoded = AuthContext::from_proto(&message).unwrap();
        assert_eq!(decoded.role, None);
        assert_eq!(decoded.scopes.to_vec(), ["orders:read"]);
        assert!(!decoded.has_scope("Orders::Read"));
    }

    #[test]
    fn references_and_liveness_round_trip() {
        let reference = context(&["*"]).reference();
        assert_eq!(reference.credential_id.as_deref(), Some("p1"));
        assert_eq!(ContextRef::from_proto(&reference.to_proto()), Some(reference));
        assert_eq!(ContextRef::from_proto(&proto::ContextRef::default()), None, "no kind names nothing");
        for liveness in [Liveness::Live, Liveness::Ended(ErrorCode::SessionEnded)] {
            assert_eq!(Liveness::from_proto(&liveness.to_proto()), liveness);
        }
        let unknown = proto::ContextCheck { valid: false, error_code: 9999 };
        assert_eq!(Liveness::from_proto(&unknown), Liveness::Ended(ErrorCode::TokenInvalid));
    }

    #[test]
    fn scopes() {
        assert!(context(&["*"]).has_scope("orders:read"));
        assert!(context(&["orders:*"]).has_scope("orders:read"));
        assert!(!context(&["orders:*"]).has_scope("invoices:read"));
        assert!(!context(&["orders:read"]).has_scope("orders:write"));
    }
}
