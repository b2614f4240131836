//! Personal access tokens (`pcp_…`): named, scoped, optionally expiring (at most a year),
//! at most `PAT_MAX_PER_USER` live per user, `last_used_at` written lazily. Tokens imported
//! from the system a team ran before (`af_live_…`, `cargo xtask import-pats`) are PATs too,
//! accepted only before `LEGACY_PAT_ACCEPT_UNTIL`.

use auth_contract::credential::{Opaque, Shape};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AuthService, ClientMeta, Principal, clients::display_parts};
use crate::{
    domain::{
        credential::{Credential, Kind, LegacyPat},
        name::Name,
        scope::{self, Scopes},
    },
    error::{Error, Invalid},
    events,
    store::{PersonalAccessToken, User},
};

pub const MAX_PAT_DAYS: i64 = 365;
const LAST_USED_EVERY: time::Duration = time::Duration::minutes(1);

/// A PAT just created; the token is shown only here.
#[derive(Debug)]
pub struct CreatedPat {
    pub pat: PersonalAccessToken,
    pub token: String,
}

/// How a user authenticated on a route that accepts either an access token or a PAT.
#[derive(Debug, Clone)]
pub enum UserPrincipal {
    Access(Box<Principal>),
    Pat(Box<(User, PersonalAccessToken)>),
}

impl UserPrincipal {
    pub fn user(&self) -> &User {
        match self {
            Self::Access(p) => &p.user,
            Self::Pat(pat) => &pat.0,
        }
    }
}

impl AuthService {
    pub async fn create_pat(
        &self,
        principal: &Principal,
        name: &str,
        scopes: Option<&[String]>,
        expires_in_days: Option<i64>,
        meta: &ClientMeta,
    ) -> Result<CreatedPat, Error> {
        let name = Name::parse("name", name)?;
        // A user may do everything (`*`), so any well-formed scopes are a subset.
        let scopes = scope::parse_list("scopes", scopes, &Scopes::all())?;
        let expires_in_days = match expires_in_days {
            None => None,
            Some(days) if (1..=MAX_PAT_DAYS).contains(&days) => Some(days),
            Some(_) => return Err(Error::validation("expires_in_days", format!("must be from 1 to {MAX_PAT_DAYS}"))),
        };
        let now = self.now();
        let live = self.live_pats(principal.user.id).await?;
        if live.len() >= self.pat_max() {
            return Err(Error::Forbidden("the personal access token limit is reached; revoke one first"));
        }
        let credential = Credential::generate(Kind::PersonalAccess);
        let (prefix, last_four) = display_parts(credential.expose());
        let pat = PersonalAccessToken {
            id: Uuid::new_v4(),
            user_id: principal.user.id,
            name: name.as_str().to_owned(),
            token_hash: credential.hash(),
            prefix,
            last_four,
            scopes,
            created_at: now,
            expires_at: expires_in_days.map(|d| now + time::Duration::days(d)),
            last_used_at: None,
            revoked_at: None,
            legacy_id: None,
        };
        self.store().insert_pat(&pat).await?;
        self.inner.metrics.token_issued("pat");
        self.audit(
            Some(principal.user.id),
            "pat_created",
            "success",
            Some(meta.ip),
            json!({"pat_id": pat.id, "name": pat.name}),
        )
        .await;
        Ok(CreatedPat { pat, token: credential.expose().to_owned() })
    }

    fn pat_max(&self) -> usize {
        usize::try_from(self.inner.config.pat_max_per_user).unwrap_or(usize::MAX)
    }

    /// Not revoked and not expired, issued here: imported legacy tokens do not count against
    /// `PAT_MAX_PER_USER`, so a user holding many can still create the ones replacing them.
    async fn live_pats(&self, user_id: Uuid) -> Result<Vec<PersonalAccessToken>, Error> {
        let now = self.now();
        Ok(self
            .store()
            .pats_for_user(user_id)
            .await?
            .into_iter()
            .filter(|p| p.legacy_id.is_none() && p.expires_at.is_none_or(|e| e > now))
            .collect())
    }

    /// Whether imported legacy PATs are accepted at `now`: strictly before
    /// `LEGACY_PAT_ACCEPT_UNTIL`, never when it is unset.
    pub(super) fn legacy_pats_accepted(&self, now: OffsetDateTime) -> bool {
        self.inner.config.legacy_pat_accept_until.is_some_and(|until| now < until)
    }

    /// The caller's PATs that are not revoked (expired ones included, so they can be seen).
    pub async fn pats(&self, principal: &Principal) -> Result<Vec<PersonalAccessToken>, Error> {
        Ok(self.store().pats_for_user(principal.user.id).await?)
    }

    /// (maximum, live) for `GET /tokens/limits`.
    pub async fn pat_usage(&self, principal: &Principal) -> Result<(usize, usize), Error> {
        Ok((self.pat_max(), self.live_pats(principal.user.id).await?.len()))
    }

    pub async fn revoke_pat(&self, principal: &Principal, id: Uuid, meta: &ClientMeta) -> Result<(), Error> {
        if !self.store().revoke_pat(principal.user.id, id, self.now()).await? {
            return Err(Error::NotFound);
        }
        self.audit(Some(principal.user.id), "pat_revoked", "success", Some(meta.ip), json!({"pat_id": id})).await;
        self.events()
            .emit(
                events::TOKEN_REVOKED,
                json!({"user_id": principal.user.id, "credential_id": id, "kind": "pat", "reason": "revoked"}),
            )
            .await;
        Ok(())
    }

    /// Verifies a PAT: checksum, existence, revocation, expiry and the user's state. An
    /// imported legacy token (`af_live_…`) is looked up only while legacy tokens are accepted;
    /// otherwise it is refused as unknown, the same answer as a token never imported.
    pub async fn authenticate_pat(&self, token: &str) -> Result<(User, PersonalAccessToken), Error> {
        let now = self.now();
        let (hash, legacy) = match LegacyPat::parse(token) {
            Some(_) if !self.legacy_pats_accepted(now) => return Err(Error::TokenInvalid(Invalid::Unknown)),
            Some(legacy) => (legacy.hash(), true),
            None => {
                let credential =
                    Credential::parse(Kind::PersonalAccess, token).ok_or(Error::TokenInvalid(Invalid::Malformed))?;
                (credential.hash(), false)
            }
        };
        let pat = self
            .store()
            .pat_by_hash(&hash)
            .await?
            .filter(|pat| pat.legacy_id.is_some() == legacy)
            .ok_or(Error::TokenInvalid(Invalid::Unknown))?;
        self.live_pat(&pat, now).await.map(|user| (user, pat))
    }

    /// What keeps a PAT's context valid, for its validation and its later re-checks alike:
    /// not revoked, not expired, its user enabled. Records its use (at most once a minute).
    pub(super) async fn live_pat(&self, pat: &PersonalAccessToken, now: OffsetDateTime) -> Result<User, Error> {
        if pat.legacy_id.is_some() && !self.legacy_pats_accepted(now) {
            return Err(Error::TokenInvalid(Invalid::Unknown));
        }
        if pat.revoked_at.is_some() {
            return Err(Error::TokenRevoked);
        }
        if pat.expires_at.is_some_and(|e| e <= now) {
            return Err(Error::TokenExpired);
        }
        let user = self.store().user_by_id(pat.user_id).await?.ok_or(Error::TokenInvalid(Invalid::UnknownUser))?;
        if user.disabled {
            return Err(Error::TokenRevoked);
        }
        if pat.last_used_at.is_none_or(|t| now - t >= LAST_USED_EVERY) {
            self.store().touch_pat(pat.id, now).await?;
        }
        Ok(user)
    }

    /// When an imported PAT stops being accepted (`LEGACY_PAT_ACCEPT_UNTIL`), or a native
    /// one's expiry: whichever comes first.
    pub(super) fn pat_deadline(&self, pat: &PersonalAccessToken) -> Option<OffsetDateTime> {
        let cutoff = pat.legacy_id.as_ref().and(self.inner.config.legacy_pat_accept_until);
        match (pat.expires_at, cutoff) {
            (Some(expires), Some(cutoff)) => Some(expires.min(cutoff)),
            (expires, cutoff) => expires.or(cutoff),
        }
    }

    /// An access token or a PAT (`pcp_…` or an imported legacy one), told apart by shape.
    pub async fn authenticate_user(&self, token: &str) -> Result<UserPrincipal, Error> {
        if is_pat(token) {
            let (user, pat) = self.authenticate_pat(token).await?;
            Ok(UserPrincipal::Pat(Box::new((user, pat))))
        } else {
            Ok(UserPrincipal::Access(Box::new(self.authenticate(token).await?)))
        }
    }
}

/// Whether a presented token is a PAT by its shape: the `pcp_` prefix, or the legacy shape.
pub(super) fn is_pat(token: &str) -> bool {
    matches!(Shape::of(token), Some(Shape::Opaque(Opaque::Pat) | Shape::LegacyPat))
}
