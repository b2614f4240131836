//! SDK sessions: a client's backend, holding an API key, opens a session for one of its own
//! users and gets a short-lived SDK token (`typ: "sdk"`, `sub = sdk:{client_id}:{external}`,
//! `tid = client_id`) with scopes no wider than the key's, plus a refresh token.

use std::net::IpAddr;

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AuthService, check_lifetime, secs};
use crate::{
    domain::{
        allowlist,
        credential::Credential,
        jwt::{Claims, NewToken, TokenType},
        scope,
    },
    error::{Error, Invalid},
    events,
    store::{Client, RateLimit, RefreshToken, SdkSession, SessionKind},
};

/// Longest accepted `external_user_id`.
pub const MAX_EXTERNAL_ID_CHARS: usize = 256;

/// Tokens of an SDK session; the refresh token is shown only here.
#[derive(Debug)]
pub struct SdkTokens {
    pub access_token: String,
    /// What the access token carries, so the issuer describes it without verifying it.
    pub claims: Claims,
    /// The client's own rate limit, for the context.
    pub rate_limit: Option<RateLimit>,
    pub refresh_token: String,
    pub expires_in: u64,
    pub session: SdkSession,
}

/// A verified SDK token.
#[derive(Debug, Clone)]
pub struct SdkPrincipal {
    pub session: SdkSession,
    pub client: Client,
    pub claims: Claims,
}

fn parse_external_id(raw: &str) -> Result<String, Error> {
    let id = raw.trim();
    if id.is_empty() {
        return Err(Error::validation("external_user_id", "is required"));
    }
    if id.chars().count() > MAX_EXTERNAL_ID_CHARS {
        return Err(Error::validation(
            "external_user_id",
            format!("must be at most {MAX_EXTERNAL_ID_CHARS} characters"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(Error::validation("external_user_id", "must not contain control characters"));
    }
    Ok(id.to_owned())
}

impl AuthService {
    /// The origin rule shared by API keys and SDK tokens: a request without `Origin` is not
    /// checked; with one, the client's list must allow it (an empty list allows none).
    pub(super) fn check_origin(&self, client: &Client, origin: Option<&str>) -> Result<(), Error> {
        match origin {
            Some(origin) if self.inner.config.origin_validation_enabled => {
                if allowlist::origin_allowed(&client.allowed_origins, origin) {
                    Ok(())
                } else {
                    Err(Error::OriginNotAllowed)
                }
            }
            _ => Ok(()),
        }
    }

    /// The IP rule for API keys: an empty list allows any address; an unknown address is
    /// refused when the list is not empty (fail closed).
    pub(super) fn check_ip(&self, client: &Client, ip: Option<IpAddr>) -> Result<(), Error> {
        if !self.inner.config.ip_allowlist_enabled || client.ip_allowlist.is_empty() {
            return Ok(());
        }
        match ip {
            Some(ip) if allowlist::ip_allowed(&client.ip_allowlist, ip) => Ok(()),
            _ => Err(Error::IpNotAllowed),
        }
    }

    fn sign_sdk(&self, session: &SdkSession, now: OffsetDateTime) -> Result<(String, Claims), Error> {
        let scopes = session.scopes.to_vec();
        let subject = format!("sdk:{}:{}", session.client_id, session.external_user_id);
        let token = self.inner.keys.sign(&NewToken {
            typ: TokenType::Sdk,
            subject: &subject,
            tenant: Some(&session.client_id.to_string()),
            session: Some(&session.id.to_string()),
            jti: &Uuid::new_v4().to_string(),
            role: "sdk",
            scopes: &scopes,
            issued_at: now,
            expires_at: (now + secs(self.inner.config.sdk_token_ttl)).min(session.expires_at),
        })?;
        self.inner.metrics.token_issued("sdk");
        Ok(token)
    }

    /// `POST /sdk/session`: checks the key (allowlists included), narrows the scopes and opens
    /// an SDK session.
    pub async fn create_sdk_session(
        &self,
        api_key: &str,
        external_user_id: &str,
        scopes: Option<&[String]>,
        ip: Option<IpAddr>,
        origin: Option<&str>,
    ) -> Result<SdkTokens, Error> {
        let result = self.create_sdk_session_inner(api_key, external_user_id, scopes, ip, origin).await;
        self.inner.metrics.operation("sdk_session", result.is_ok());
        result
    }

    async fn create_sdk_session_inner(
        &self,
        api_key: &str,
        external_user_id: &str,
        scopes: Option<&[String]>,
        ip: Option<IpAddr>,
        origin: Option<&str>,
    ) -> Result<SdkTokens, Error> {
        let context = self.check_api_key(api_key, ip, origin).await?;
        let external_user_id = parse_external_id(external_user_id)?;
        let scopes = scope::parse_list("scopes", scopes, &context.scopes)?;
        if !scopes.is_subset_of(&context.scopes) {
            return Err(Error::InsufficientScope("the requested scopes exceed the API key's scopes".to_owned()));
        }
        let now = self.now();
        let session = SdkSession {
            id: Uuid::new_v4(),
            client_id: context.client_id,
            api_key_id: context.key_id,
            external_user_id,
            scopes,
            ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
            created_at: now,
            last_activity: now,
            expires_at: now + secs(self.inner.config.session_lifetime),
            ended_at: None,
            end_reason: None,
        };
        let (refresh, record) = self.new_refresh(session.id, SessionKind::Sdk, None, session.expires_at, now);
        self.store().insert_sdk_session(&session, &record).await?;
        let tokens = self.sdk_tokens(session, context.rate_limit, &refresh, now)?;
        self.events()
            .emit(
                events::SESSION_CREATED,
                json!({"session_id": tokens.session.id, "client_id": tokens.session.client_id, "kind": "sdk"}),
            )
            .await;
        Ok(tokens)
    }

    /// Signs an SDK access token for `session` and pairs it with its refresh token.
    fn sdk_tokens(
        &self,
        session: SdkSession,
        rate_limit: Option<RateLimit>,
        refresh: &Credential,
        now: OffsetDateTime,
    ) -> Result<SdkTokens, Error> {
        let (access_token, claims) = self.sign_sdk(&session, now)?;
        Ok(SdkTokens {
            access_token,
            claims,
            rate_limit,
            refresh_token: refresh.expose().to_owned(),
            expires_in: self.inner.config.sdk_token_ttl.as_secs(),
            session,
        })
    }

    /// Ends an SDK session and announces it.
    pub(super) async fn end_sdk_session(&self, id: Uuid, reason: &'static str) -> Result<bool, Error> {
        let ended = self.store().end_sdk_session(id, self.now(), reason).await?;
        if ended {
            self.events()
                .emit(events::SESSION_TERMINATED, json!({"session_id": id, "kind": "sdk", "reason": reason}))
                .await;
        }
        Ok(ended)
    }

    /// The SDK session, client and key behind an SDK session id, if all still stand.
    async fn live_sdk_session(&self, id: Uuid, now: OffsetDateTime) -> Result<(SdkSession, Client), Error> {
        let session = self.store().sdk_session(id).await?.ok_or(Error::SessionEnded)?;
        let cutoff = self.idle_cutoff(now);
        if let Err(err) = check_lifetime(session.ended_at, session.expires_at, session.last_activity, now, cutoff) {
            if matches!(err, Error::SessionIdle) {
                self.end_sdk_session(session.id, "idle").await?;
            }
            return Err(err);
        }
        let key = self.store().api_key(session.api_key_id).await?;
        if key.is_none_or(|k| k.revoked_at.is_some()) {
            return Err(Error::SessionEnded);
        }
        let client = self.store().client(session.client_id).await?.ok_or(Error::SessionEnded)?;
        let owner = self.store().user_by_id(client.owner_id).await?;
        if owner.is_none_or(|o| o.disabled) {
            return Err(Error::SessionEnded);
        }
        Ok((session, client))
    }

    pub(super) async fn refresh_sdk(&self, record: &RefreshToken, now: OffsetDateTime) -> Result<SdkTokens, Error> {
        let (session, client) = self.live_sdk_session(record.session_id, now).await.map_err(|e| {
            if matches!(e, Error::Unavailable(_) | Error::Internal(_)) { e } else { Error::RefreshInvalid }
        })?;
        let (next, next_record) = self.new_refresh(session.id, SessionKind::Sdk, None, session.expires_at, now);
        if !self.store().rotate_refresh_token(record.id, now, &next_record).await? {
            return Err(Error::RefreshConflict);
        }
        let tokens = self.sdk_tokens(SdkSession { last_activity: now, ..session }, client.rate_limit, &next, now)?;
        self.events()
            .emit(
                events::TOKEN_REFRESHED,
                json!({"session_id": tokens.session.id, "client_id": tokens.session.client_id, "kind": "sdk"}),
            )
            .await;
        Ok(tokens)
    }

    /// Verifies an SDK token: signature and claims, its session, key and client, and the
    /// client's origins when the request carries an `Origin`.
    pub async fn authenticate_sdk(&self, token: &str, origin: Option<&str>) -> Result<SdkPrincipal, Error> {
        let now = self.now();
        let claims = self.inner.keys.verify(token, TokenType::Sdk, now)?;
        self.sdk_principal(claims, origin, now).await
    }

    /// The principal behind a verified SDK token's claims.
    pub(super) async fn sdk_principal(
        &self,
        claims: Claims,
        origin: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<SdkPrincipal, Error> {
        let session_id = claims
            .sid
            .as_deref()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or(Error::TokenInvalid(Invalid::NoSession))?;
        let tenant = claims.tid.as_deref().ok_or(Error::TokenInvalid(Invalid::TenantMismatch))?;
        let (session, client) = self.live_sdk(&claims.jti, session_id, tenant, origin, now).await?;
        Ok(SdkPrincipal { session, client, claims })
    }

    /// What keeps an SDK context valid once its token's signature was checked, for its
    /// validation and its later re-checks alike: the `jti` not revoked, the session live and
    /// the tenant's, its key, client and owner standing, and the origin allowed when there is
    /// one. Counts as activity (written at most once a minute).
    pub(super) async fn live_sdk(
        &self,
        jti: &str,
        session_id: Uuid,
        tenant: &str,
        origin: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(SdkSession, Client), Error> {
        if self.store().is_jti_revoked(jti).await? {
            return Err(Error::TokenRevoked);
        }
        let (session, client) = self.live_sdk_session(session_id, now).await?;
        if tenant != client.id.to_string() {
            return Err(Error::TokenInvalid(Invalid::TenantMismatch));
        }
        self.check_origin(&client, origin)?;
        if now - session.last_activity >= time::Duration::minutes(1) {
            self.store().touch_sdk_session(session.id, now).await?;
        }
        Ok((session, client))
    }
}
