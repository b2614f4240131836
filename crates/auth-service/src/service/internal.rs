//! The internal face of the auth service, shared by gRPC and the forward-auth HTTP mirrors:
//! service tokens, and one `validate` for every credential kind that answers an
//! [`AuthContext`] and how long a caller may cache it.

use std::net::IpAddr;

use auth_contract::{AuthContext, ContextRef, Kind, RateLimit, scope::Scopes};
use secrecy::ExposeSecret;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AuthService, Principal, Refreshed, SdkTokens, sdk::SdkPrincipal, secs};
use crate::{
    domain::{
        credential::{Credential, Kind as CredentialKind},
        jwt::{Claims, TokenType},
    },
    error::{Error, Invalid},
    store::{self, PersonalAccessToken, SdkSession, ServiceToken, Session, User},
};

/// No answer may be cached longer than this (SPEC §5).
pub const MAX_CACHE_TTL_SECONDS: i64 = 60;
const MAX_SERVICE_NAME: usize = 64;

/// A positive validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub context: AuthContext,
    /// Seconds a caller may cache this answer.
    pub cache_ttl: u32,
}

fn rate_limit(limit: Option<store::RateLimit>) -> Option<RateLimit> {
    limit.map(|l| RateLimit { requests: l.requests, per_ms: l.per_ms })
}

impl AuthService {
    /// Seconds until the earliest of the deadlines, capped at 60 and never negative.
    fn cache_ttl(&self, deadlines: &[Option<OffsetDateTime>]) -> u32 {
        let now = self.now();
        let seconds =
            deadlines.iter().flatten().map(|d| (*d - now).whole_seconds()).fold(MAX_CACHE_TTL_SECONDS, i64::min).max(0);
        u32::try_from(seconds).unwrap_or(0)
    }

    /// Issues a service token to an internal service that proves `SERVICE_SECRET`.
    pub async fn issue_service_token(
        &self,
        service_name: &str,
        secret: &str,
    ) -> Result<(String, OffsetDateTime), Error> {
        // Compared as digests: equal lengths, so not even the secret's length leaks. The
        // previous secrets of a rotation are accepted too, each compared the same way.
        let offered = Sha256::digest(secret.as_bytes());
        let config = &self.inner.config;
        let accepted = std::iter::once(&config.service_secret)
            .chain(&config.service_previous_secrets)
            .fold(false, |found, known| {
                found | bool::from(Sha256::digest(known.expose_secret().as_bytes()).ct_eq(&offered))
            });
        if !accepted {
            self.inner.metrics.operation("service_token", false);
            tracing::warn!(service = %service_name.chars().take(MAX_SERVICE_NAME).collect::<String>(), "service token refused: wrong secret");
            return Err(Error::InvalidCredentials);
        }
        let name = service_name.trim();
        let valid_name = !name.is_empty()
            && name.len() <= MAX_SERVICE_NAME
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err(Error::validation("service_name", "must be 1 to 64 of [A-Za-z0-9._-]"));
        }
        let now = self.now();
        let credential = Credential::generate(CredentialKind::Service);
        let token = ServiceToken {
            id: Uuid::new_v4(),
            service_name: name.to_owned(),
            token_hash: credential.hash(),
            created_at: now,
            expires_at: now + secs(self.inner.config.service_token_ttl),
        };
        self.store().insert_service_token(&token).await?;
        self.inner.metrics.token_issued("service");
        self.inner.metrics.operation("service_token", true);
        Ok((credential.expose().to_owned(), token.expires_at))
    }

    /// Verifies a service token.
    pub async fn authenticate_service(&self, token: &str) -> Result<ServiceToken, Error> {
        let credential =
            Credential::parse(CredentialKind::Service, token.trim()).ok_or(Error::TokenInvalid(Invalid::Malformed))?;
        let record = self
            .store()
            .service_token_by_hash(&credential.hash())
            .await?
            .ok_or(Error::TokenInvalid(Invalid::Unknown))?;
        if record.expires_at <= self.now() {
            return Err(Error::TokenExpired);
        }
        Ok(record)
    }

    fn user_context(&self, principal: &Principal) -> Validated {
        self.describe_user_token(&principal.user, &principal.session, &principal.claims)
    }

    /// The context of a user's access token, from its claims, session and user.
    fn describe_user_token(&self, user: &User, session: &Session, claims: &Claims) -> Validated {
        let expires = OffsetDateTime::from_unix_timestamp(claims.exp).ok();
        Validated {
            cache_ttl: self.cache_ttl(&[expires, Some(self.idle_deadline(session)), Some(session.expires_at)]),
            context: AuthContext {
                subject: user.id.to_string(),
                kind: Kind::User,
                user_id: Some(user.id.to_string()),
                tenant_id: None,
                client_id: None,
                session_id: Some(session.id.to_string()),
                credential_id: Some(claims.jti.clone()),
                role: Some(user.role),
                scopes: Scopes::from_wire(claims.scopes.iter().map(String::as_str)),
                expires_at: Some(claims.exp),
                rate_limit: None,
            },
        }
    }

    fn sdk_context(&self, principal: &SdkPrincipal) -> Validated {
        self.describe_sdk_token(&principal.session, principal.client.rate_limit, &principal.claims)
    }

    /// The context of an SDK token, from its claims, session and client's limit.
    fn describe_sdk_token(&self, session: &SdkSession, limit: Option<store::RateLimit>, claims: &Claims) -> Validated {
        let expires = OffsetDateTime::from_unix_timestamp(claims.exp).ok();
        let idle = session.last_activity + self.inner.config.session_idle_timeout;
        let client = session.client_id.to_string();
        Validated {
            cache_ttl: self.cache_ttl(&[expires, Some(idle), Some(session.expires_at)]),
            context: AuthContext {
                subject: claims.sub.clone(),
                kind: Kind::Sdk,
                user_id: None,
                tenant_id: Some(client.clone()),
                client_id: Some(client),
                session_id: Some(session.id.to_string()),
                credential_id: Some(claims.jti.clone()),
                role: None,
                scopes: Scopes::from_wire(claims.scopes.iter().map(String::as_str)),
                expires_at: Some(claims.exp),
                rate_limit: rate_limit(limit),
            },
        }
    }

    /// What a refresh just issued, described from what was signed (issue once, describe
    /// once: the fresh token is not verified again).
    pub fn describe_refreshed(&self, refreshed: &Refreshed) -> Validated {
        match refreshed {
            Refreshed::User { user, tokens } => self.describe_user_token(user, &tokens.session, &tokens.claims),
            Refreshed::Sdk(tokens) => self.describe_sdk(tokens),
        }
    }

    /// What an SDK session's tokens are, described from what was signed.
    pub fn describe_sdk(&self, tokens: &SdkTokens) -> Validated {
        self.describe_sdk_token(&tokens.session, tokens.rate_limit, &tokens.claims)
    }

    /// Validates any credential: access and SDK tokens, PATs, service tokens, and API keys
    /// (as [`Self::validate_api_key`]). `ip` and `origin` are those of the original request.
    pub async fn validate(
        &self,
        credential: &str,
        ip: Option<IpAddr>,
        origin: Option<&str>,
    ) -> Result<Validated, Error> {
        let credential = credential.trim();
        if credential.is_empty() {
            return Err(Error::TokenMissing);
        }
        if credential.starts_with(CredentialKind::ApiKey.prefix()) {
            return self.validate_api_key(credential, ip, origin).await;
        }
        if credential.starts_with(CredentialKind::Service.prefix()) {
            let token = self.authenticate_service(credential).await?;
            return Ok(Validated {
                cache_ttl: self.cache_ttl(&[Some(token.expires_at)]),
                context: AuthContext {
                    subject: token.service_name.clone(),
                    kind: Kind::Service,
                    user_id: None,
                    tenant_id: None,
                    client_id: None,
                    session_id: None,
                    credential_id: Some(token.id.to_string()),
                    role: None,
                    scopes: Scopes::all(),
                    expires_at: Some(token.expires_at.unix_timestamp()),
                    rate_limit: None,
                },
            });
        }
        if super::credentials::is_pat(credential) {
            let (user, pat) = self.authenticate_pat(credential).await?;
            return Ok(self.pat_context(&user, &pat));
        }
        // A JWT is decoded once and dispatched on its `typ`.
        let now = self.now();
        match self.inner.keys.verify_any(credential, now)? {
            (TokenType::Access, claims) => Ok(self.user_context(&self.access_principal(claims, now).await?)),
            (TokenType::Sdk, claims) => Ok(self.sdk_context(&self.sdk_principal(claims, origin, now).await?)),
        }
    }

    /// An imported PAT's context ends at `LEGACY_PAT_ACCEPT_UNTIL` at the latest, and no
    /// caller caches it past then.
    fn pat_context(&self, user: &User, pat: &PersonalAccessToken) -> Validated {
        let deadline = self.pat_deadline(pat);
        Validated {
            cache_ttl: self.cache_ttl(&[deadline]),
            context: AuthContext {
                subject: user.id.to_string(),
                kind: Kind::Pat,
                user_id: Some(user.id.to_string()),
                tenant_id: None,
                client_id: None,
                session_id: None,
                credential_id: Some(pat.id.to_string()),
                role: Some(user.role),
                scopes: pat.scopes.clone(),
                expires_at: deadline.map(OffsetDateTime::unix_timestamp),
                rate_limit: None,
            },
        }
    }

    /// Validates an API key with the client's IP allowlist and origins.
    pub async fn validate_api_key(
        &self,
        key: &str,
        ip: Option<IpAddr>,
        origin: Option<&str>,
    ) -> Result<Validated, Error> {
        let context = self.check_api_key(key, ip, origin).await?;
        let client = context.client_id.to_string();
        Ok(Validated {
            cache_ttl: self.cache_ttl(&[context.expires_at]),
            context: AuthContext {
                subject: format!("client:{client}"),
                kind: Kind::ApiKey,
                user_id: None,
                tenant_id: Some(client.clone()),
                client_id: Some(client),
                session_id: None,
                credential_id: Some(context.key_id.to_string()),
                role: None,
                scopes: context.scopes.clone(),
                expires_at: context.expires_at.map(OffsetDateTime::unix_timestamp),
                rate_limit: rate_limit(context.rate_limit),
            },
        })
    }

    /// `CheckContext`: whether a context validated earlier is still live, from its ids alone,
    /// through the same state checks its validation made (the signature, checked then, is not
    /// needed again). A re-check counts as use of its session or credential, as a validation
    /// does: an open connection is activity.
    pub async fn check_context(&self, reference: &ContextRef) -> Result<(), Error> {
        let id = |text: &Option<String>| {
            text.as_deref().and_then(|t| Uuid::parse_str(t).ok()).ok_or(Error::TokenInvalid(Invalid::NamesNothing))
        };
        let text = |text: &Option<String>| text.clone().ok_or(Error::TokenInvalid(Invalid::NamesNothing));
        let now = self.now();
        match reference.kind {
            Kind::User => {
                let jti = text(&reference.credential_id)?;
                let (session, user) = (id(&reference.session_id)?, id(&reference.user_id)?);
                self.live_user_session(&jti, session, user, now).await.map(drop)
            }
            Kind::Sdk => {
                let (jti, tenant) = (text(&reference.credential_id)?, text(&reference.client_id)?);
                self.live_sdk(&jti, id(&reference.session_id)?, &tenant, None, now).await.map(drop)
            }
            Kind::Pat => {
                let (pat, user) = (id(&reference.credential_id)?, id(&reference.user_id)?);
                // The user's unrevoked PATs: one missing from them was revoked (or never was).
                let pats = self.store().pats_for_user(user).await?;
                let pat = pats.iter().find(|p| p.id == pat).ok_or(Error::TokenRevoked)?;
                self.live_pat(pat, now).await.map(drop)
            }
            Kind::ApiKey => {
                let key = self.store().api_key(id(&reference.credential_id)?).await?.ok_or(Error::KeyInvalid)?;
                if key.client_id != id(&reference.client_id)? {
                    return Err(Error::KeyInvalid);
                }
                self.live_key(&key, now).await.map(drop)
            }
            Kind::Service => {
                let token = self
                    .store()
                    .service_token(id(&reference.credential_id)?)
                    .await?
                    .ok_or(Error::TokenInvalid(Invalid::NamesNothing))?;
                if token.expires_at <= now { Err(Error::TokenExpired) } else { Ok(()) }
            }
        }
    }

    /// Every client's allowed origins (CORS preflight at the gateway).
    pub async fn allowed_origins(&self) -> Result<Vec<String>, Error> {
        Ok(self.store().all_allowed_origins().await?)
    }
}
