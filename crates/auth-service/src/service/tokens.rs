//! Issuing access and refresh tokens, rotating refresh tokens (with reuse detection) and
//! authenticating an access token against its session.

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AuthService, ClientMeta, check_session, secs};
use crate::{
    domain::{
        credential::{Credential, Kind},
        device,
        jwt::{Claims, NewToken, TokenType},
    },
    error::{Error, Invalid},
    events,
    store::{RefreshToken, Session, SessionKind, User},
};

/// What a refresh produced: a user's new pair, or an SDK session's.
#[derive(Debug)]
pub enum Refreshed {
    User { user: User, tokens: IssuedTokens },
    Sdk(super::sdk::SdkTokens),
}

/// Validations write `last_activity` at most this often per session.
const ACTIVITY_WRITE_EVERY: time::Duration = time::Duration::minutes(1);
const ALL_SCOPES: &str = "*";

/// Tokens handed to a client; the refresh token is shown only here.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: String,
    /// What the access token carries, so the issuer describes it without verifying it.
    pub claims: Claims,
    pub refresh_token: String,
    pub expires_in: u64,
    pub session: Session,
}

/// An authenticated user's request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub session: Session,
    pub claims: Claims,
}

impl AuthService {
    fn sign_access(&self, user: &User, session: &Session, now: OffsetDateTime) -> Result<(String, Claims), Error> {
        let scopes = vec![ALL_SCOPES.to_owned()];
        let token = self.inner.keys.sign(&NewToken {
            typ: TokenType::Access,
            subject: &user.id.to_string(),
            tenant: None,
            session: Some(&session.id.to_string()),
            jti: &Uuid::new_v4().to_string(),
            role: user.role.as_str(),
            scopes: &scopes,
            issued_at: now,
            expires_at: now + secs(self.inner.config.jwt.access_ttl),
        })?;
        self.inner.metrics.token_issued("access");
        Ok(token)
    }

    /// A new refresh token for a session, expiring no later than the session.
    pub(super) fn new_refresh(
        &self,
        session_id: Uuid,
        kind: SessionKind,
        user_id: Option<Uuid>,
        session_expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> (Credential, RefreshToken) {
        let credential = Credential::generate(Kind::Refresh);
        let record = RefreshToken {
            id: Uuid::new_v4(),
            token_hash: credential.hash(),
            session_id,
            session_kind: kind,
            user_id,
            created_at: now,
            expires_at: (now + secs(self.inner.config.jwt.refresh_ttl)).min(session_expires_at),
            spent_at: None,
        };
        self.inner.metrics.token_issued("refresh");
        (credential, record)
    }

    fn issued(&self, (access_token, claims): (String, Claims), refresh: &Credential, session: Session) -> IssuedTokens {
        IssuedTokens {
            access_token,
            claims,
            refresh_token: refresh.expose().to_owned(),
            expires_in: self.inner.config.jwt.access_ttl.as_secs(),
            session,
        }
    }

    /// Opens a session for a user who just proved who they are, ending the oldest sessions
    /// beyond `MAX_SESSIONS_PER_USER`.
    pub(super) async fn open_session(&self, user: &User, meta: &ClientMeta) -> Result<IssuedTokens, Error> {
        let now = self.now();
        let session = Session {
            id: Uuid::new_v4(),
            user_id: user.id,
            device: device::describe(meta.user_agent.as_deref()),
            user_agent: meta.user_agent.as_ref().map(|ua| ua.chars().take(512).collect()),
            ip: meta.ip.to_string(),
            created_at: now,
            last_activity: now,
            expires_at: now + secs(self.inner.config.session_lifetime),
            ended_at: None,
            end_reason: None,
        };
        let (refresh, record) = self.new_refresh(session.id, SessionKind::User, Some(user.id), session.expires_at, now);
        self.store().insert_session(&session, &record).await?;
        self.enforce_max_sessions(user.id, session.id, now).await?;
        let access = self.sign_access(user, &session, now)?;
        self.events()
            .emit(
                events::SESSION_CREATED,
                json!({"user_id": user.id, "session_id": session.id, "device": session.device, "ip": session.ip}),
            )
            .await;
        Ok(self.issued(access, &refresh, session))
    }

    /// `MAX_SESSIONS_PER_USER`, counted after the new session is stored (never "count, then
    /// insert", which concurrent logins would all pass): the oldest sessions beyond the limit
    /// end, the new one never does. Whatever the interleaving of concurrent logins, the last
    /// to finish sees every session inserted before it, so at most the limit stays live.
    async fn enforce_max_sessions(&self, user_id: Uuid, new: Uuid, now: time::OffsetDateTime) -> Result<(), Error> {
        let live = self.store().live_sessions(user_id, now, self.idle_cutoff(now)).await?;
        let max = usize::try_from(self.inner.config.max_sessions_per_user).unwrap_or(usize::MAX);
        if live.len() > max {
            // Oldest first (by creation, then id), the new session left out.
            let excess: Vec<Uuid> = live.iter().map(|s| s.id).filter(|id| *id != new).take(live.len() - max).collect();
            self.end_sessions(&excess, "max_sessions", user_id).await?;
        }
        Ok(())
    }

    /// Rotates a refresh token (of a user or an SDK session). Of concurrent uses exactly one
    /// wins; a token spent within `REFRESH_REUSE_GRACE_SECONDS` gets `refresh_conflict`, one
    /// spent earlier ends the whole session (reuse detection).
    pub async fn refresh(&self, raw: &str, meta: &ClientMeta) -> Result<Refreshed, Error> {
        self.refresh_session(raw, meta, None).await
    }

    /// [`Self::refresh`] for a caller that holds one session (a socket): a token of any other
    /// session is refused before anything is spent or detected as reused.
    pub async fn refresh_session(
        &self,
        raw: &str,
        meta: &ClientMeta,
        expected_session: Option<Uuid>,
    ) -> Result<Refreshed, Error> {
        let result = self.refresh_inner(raw, meta, expected_session).await;
        self.inner.metrics.operation("refresh", result.is_ok());
        result
    }

    async fn refresh_inner(&self, raw: &str, meta: &ClientMeta, expected: Option<Uuid>) -> Result<Refreshed, Error> {
        let credential = Credential::parse(Kind::Refresh, raw.trim()).ok_or(Error::RefreshInvalid)?;
        let record = self.store().refresh_token_by_hash(&credential.hash()).await?.ok_or(Error::RefreshInvalid)?;
        if expected.is_some_and(|session| session != record.session_id) {
            return Err(Error::Forbidden("the refresh token belongs to another session"));
        }
        let now = self.now();
        if let Some(spent_at) = record.spent_at {
            if now - spent_at < secs(self.inner.config.refresh_reuse_grace) {
                return Err(Error::RefreshConflict);
            }
            self.end_after_reuse(&record, meta).await?;
            return Err(Error::RefreshInvalid);
        }
        if record.expires_at <= now {
            return Err(Error::RefreshInvalid);
        }
        match record.session_kind {
            SessionKind::User => self.refresh_user(&record, now).await,
            SessionKind::Sdk => self.refresh_sdk(&record, now).await.map(Refreshed::Sdk),
        }
    }

    async fn end_after_reuse(&self, record: &RefreshToken, meta: &ClientMeta) -> Result<(), Error> {
        let ended = match (record.session_kind, record.user_id) {
            (SessionKind::User, Some(user_id)) => {
                !self.end_sessions(&[record.session_id], "refresh_reuse", user_id).await?.is_empty()
            }
            _ => self.end_sdk_session(record.session_id, "refresh_reuse").await?,
        };
        self.audit(
            record.user_id,
            "refresh_reuse",
            "blocked",
            Some(meta.ip),
            json!({"session_id": record.session_id, "session_kind": record.session_kind.as_str(), "session_ended": ended}),
        )
        .await;
        tracing::warn!(session_id = %record.session_id, "refresh token reused; session ended");
        Ok(())
    }

    async fn refresh_user(&self, record: &RefreshToken, now: OffsetDateTime) -> Result<Refreshed, Error> {
        let session = self.store().session(record.session_id).await?.ok_or(Error::RefreshInvalid)?;
        match check_session(&session, now, self.idle_cutoff(now)) {
            Ok(()) => {}
            Err(Error::SessionIdle) => {
                self.end_sessions(&[session.id], "idle", session.user_id).await?;
                return Err(Error::RefreshInvalid);
            }
            Err(_) => return Err(Error::RefreshInvalid),
        }
        let user =
            self.store().user_by_id(session.user_id).await?.filter(|u| !u.disabled).ok_or(Error::RefreshInvalid)?;
        let (next, next_record) =
            self.new_refresh(session.id, SessionKind::User, Some(user.id), session.expires_at, now);
        if !self.store().rotate_refresh_token(record.id, now, &next_record).await? {
            return Err(Error::RefreshConflict);
        }
        let access = self.sign_access(&user, &session, now)?;
        self.events().emit(events::TOKEN_REFRESHED, json!({"user_id": user.id, "session_id": session.id})).await;
        let session = Session { last_activity: now, ..session };
        let tokens = self.issued(access, &next, session);
        Ok(Refreshed::User { user, tokens })
    }

    /// Authenticates a bearer access token: signature and claims, revocation, the session's
    /// state and the user's. Counts as activity (written at most once a minute).
    pub async fn authenticate(&self, token: &str) -> Result<Principal, Error> {
        let now = self.now();
        let claims = self.inner.keys.verify(token, TokenType::Access, now)?;
        self.access_principal(claims, now).await
    }

    /// The principal behind a verified access token's claims.
    pub(super) async fn access_principal(&self, claims: Claims, now: OffsetDateTime) -> Result<Principal, Error> {
        let session_id = claims
            .sid
            .as_deref()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or(Error::TokenInvalid(Invalid::NoSession))?;
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| Error::TokenInvalid(Invalid::NotAUser))?;
        let (user, session) = self.live_user_session(&claims.jti, session_id, user_id, now).await?;
        Ok(Principal { user, session, claims })
    }

    /// What keeps a user's access-token context valid once its signature was checked, for
    /// its validation and its later re-checks alike: the `jti` not revoked, the session the
    /// user's own and live, the user enabled. Counts as activity (written at most once a
    /// minute).
    pub(super) async fn live_user_session(
        &self,
        jti: &str,
        session_id: Uuid,
        user_id: Uuid,
        now: OffsetDateTime,
    ) -> Result<(User, Session), Error> {
        if self.store().is_jti_revoked(jti).await? {
            return Err(Error::TokenRevoked);
        }
        let mut session = self.store().session(session_id).await?.ok_or(Error::SessionEnded)?;
        if session.user_id != user_id {
            return Err(Error::TokenInvalid(Invalid::ForeignSession));
        }
        if let Err(err) = check_session(&session, now, self.idle_cutoff(now)) {
            if matches!(err, Error::SessionIdle) {
                self.end_sessions(&[session.id], "idle", user_id).await?;
            }
            return Err(err);
        }
        let user = self.store().user_by_id(user_id).await?.ok_or(Error::TokenInvalid(Invalid::UnknownUser))?;
        if user.disabled {
            return Err(Error::TokenRevoked);
        }
        if now - session.last_activity >= ACTIVITY_WRITE_EVERY {
            self.mark_activity(&session, now).await?;
            session.last_activity = now;
        }
        Ok((user, session))
    }

    pub(super) async fn mark_activity(&self, session: &Session, now: OffsetDateTime) -> Result<(), Error> {
        self.store().touch_session(session.id, now).await?;
        self.events()
            .emit(events::SESSION_ACTIVITY_UPDATED, json!({"user_id": session.user_id, "session_id": session.id}))
            .await;
        Ok(())
    }
}
