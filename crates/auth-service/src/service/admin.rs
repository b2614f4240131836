//! Administration: listing users, disabling and enabling them, changing roles. Admin rights
//! are read from the user's stored role on every request, so a demotion takes effect at once.

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AuthService, ClientMeta, Principal};
use crate::{
    domain::{email::Email, role::Role},
    error::Error,
    events,
    store::User,
};

impl AuthService {
    fn require_admin(principal: &Principal) -> Result<(), Error> {
        if principal.user.role == Role::Admin {
            Ok(())
        } else {
            Err(Error::Forbidden("this route needs the admin role"))
        }
    }

    /// Users newest first; the cursor is the last user's `created_at` (ms) and id.
    pub async fn admin_users(
        &self,
        principal: &Principal,
        cursor: Option<(i64, Uuid)>,
        limit: u32,
    ) -> Result<Vec<User>, Error> {
        Self::require_admin(principal)?;
        Ok(self.store().list_users(cursor, limit).await?)
    }

    /// Disables a user: their sessions end now; their access tokens, PATs, refresh tokens and
    /// clients' keys are refused from now on, and login is refused.
    pub async fn disable_user(&self, principal: &Principal, id: Uuid, meta: &ClientMeta) -> Result<(), Error> {
        Self::require_admin(principal)?;
        if id == principal.user.id {
            return Err(Error::validation("id", "an admin cannot disable their own account"));
        }
        let now = self.now();
        if !self.store().set_user_disabled(id, true, now).await? {
            return Err(Error::NotFound);
        }
        let sessions: Vec<Uuid> =
            self.store().live_sessions(id, now, OffsetDateTime::UNIX_EPOCH).await?.into_iter().map(|s| s.id).collect();
        let ended = self.store().end_sessions(&sessions, now, "user_disabled").await?;
        // His clients' API-key and SDK contexts end too: every cache drops them by client id.
        let clients: Vec<Uuid> = self.store().clients_for_owner(id).await?.into_iter().map(|c| c.id).collect();
        self.audit(Some(id), "user_disabled", "success", Some(meta.ip), json!({"by": principal.user.id})).await;
        self.events()
            .emit(
                events::USER_DISABLED,
                json!({"user_id": id, "session_ids": ended, "client_ids": clients, "reason": "user_disabled"}),
            )
            .await;
        Ok(())
    }

    pub async fn enable_user(&self, principal: &Principal, id: Uuid, meta: &ClientMeta) -> Result<(), Error> {
        Self::require_admin(principal)?;
        if !self.store().set_user_disabled(id, false, self.now()).await? {
            return Err(Error::NotFound);
        }
        self.audit(Some(id), "user_enabled", "success", Some(meta.ip), json!({"by": principal.user.id})).await;
        Ok(())
    }

    pub async fn set_role(
        &self,
        principal: &Principal,
        id: Uuid,
        role: Role,
        meta: &ClientMeta,
    ) -> Result<User, Error> {
        Self::require_admin(principal)?;
        if !self.store().set_user_role(id, role, self.now()).await? {
            return Err(Error::NotFound);
        }
        self.audit(Some(id), "role_changed", "success", Some(meta.ip), json!({"by": principal.user.id, "role": role}))
            .await;
        self.announce_role(id, role).await;
        self.store().user_by_id(id).await?.ok_or(Error::NotFound)
    }

    /// `auth:user.role_changed`: every cache holding the user's contexts drops them, so the
    /// new role applies at once.
    async fn announce_role(&self, id: Uuid, role: Role) {
        self.events().emit(events::USER_ROLE_CHANGED, role_changed(id, role)).await;
    }
}

fn role_changed(id: Uuid, role: Role) -> serde_json::Value {
    json!({"user_id": id, "role": role, "reason": "role_changed"})
}

impl AuthService {
    /// `cargo xtask users set-role`: an operator's change by email (no acting user), audited
    /// and announced like an admin's. The event is published before this returns, and a bus
    /// that cannot take it is an error the operator sees (caches then follow within their
    /// TTL, ≤ 60 s), since an operator's process exits right after.
    pub async fn set_role_as_operator(&self, email: &str, role: Role) -> Result<User, Error> {
        let email = Email::parse("email", email)?;
        let user = self.store().user_by_email(email.as_str()).await?.ok_or(Error::NotFound)?;
        self.store().set_user_role(user.id, role, self.now()).await?;
        self.audit(Some(user.id), "role_changed", "success", None, json!({"by": "operator", "role": role})).await;
        let text = events::payload(self.inner.deps.clock.as_ref(), role_changed(user.id, role));
        self.inner.deps.bus.publish(events::USER_ROLE_CHANGED, &text).await?;
        Ok(User { role, ..user })
    }
}
