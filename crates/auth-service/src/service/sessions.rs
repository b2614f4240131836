//! A user's view of their sessions and security events.

use serde_json::json;
use uuid::Uuid;

use super::{AuthService, ClientMeta, Principal};
use crate::{
    error::Error,
    events,
    store::{AuditEntry, Session},
};

pub const AUDIT_DEFAULT_LIMIT: u32 = 20;
pub const AUDIT_MAX_LIMIT: u32 = 100;

impl AuthService {
    /// Live sessions, oldest first.
    pub async fn sessions(&self, principal: &Principal) -> Result<Vec<Session>, Error> {
        let now = self.now();
        Ok(self.store().live_sessions(principal.user.id, now, self.idle_cutoff(now)).await?)
    }

    /// When the current session goes idle unless used again.
    pub fn idle_deadline(&self, session: &Session) -> time::OffsetDateTime {
        session.last_activity + self.inner.config.session_idle_timeout
    }

    /// Ends one of the caller's sessions; someone else's, or one already over, is not found.
    pub async fn end_session(&self, principal: &Principal, id: Uuid, meta: &ClientMeta) -> Result<(), Error> {
        let session =
            self.store().session(id).await?.filter(|s| s.user_id == principal.user.id).ok_or(Error::NotFound)?;
        let ended = self.store().end_sessions(&[session.id], self.now(), "user_request").await?;
        if ended.is_empty() {
            return Err(Error::NotFound);
        }
        self.audit(Some(principal.user.id), "session_end", "success", Some(meta.ip), json!({"session_id": id})).await;
        self.events()
            .emit(
                events::SESSION_DELETED,
                json!({"user_id": principal.user.id, "session_id": id, "reason": "user_request"}),
            )
            .await;
        Ok(())
    }

    /// Ends every session of the caller but the current one.
    pub async fn end_other_sessions(&self, principal: &Principal, meta: &ClientMeta) -> Result<Vec<Uuid>, Error> {
        let others: Vec<Uuid> = self
            .sessions(principal)
            .await?
            .into_iter()
            .map(|s| s.id)
            .filter(|id| *id != principal.session.id)
            .collect();
        let ended = self.store().end_sessions(&others, self.now(), "user_request").await?;
        self.audit(
            Some(principal.user.id),
            "sessions_end_others",
            "success",
            Some(meta.ip),
            json!({"session_ids": ended}),
        )
        .await;
        if !ended.is_empty() {
            self.events()
                .emit(
                    events::SESSIONS_BULK_TERMINATED,
                    json!({"user_id": principal.user.id, "session_ids": ended, "reason": "user_request"}),
                )
                .await;
        }
        Ok(ended)
    }

    /// Resets the idle timer now.
    pub async fn record_activity(&self, principal: &Principal) -> Result<Session, Error> {
        let now = self.now();
        self.mark_activity(&principal.session, now).await?;
        Ok(Session { last_activity: now, ..principal.session.clone() })
    }

    /// The caller's security events, newest first; the cursor is the last id seen.
    pub async fn audit_log(
        &self,
        principal: &Principal,
        cursor: Option<i64>,
        limit: u32,
    ) -> Result<(Vec<AuditEntry>, Option<i64>), Error> {
        let entries = self.store().audit_for_user(principal.user.id, cursor, limit).await?;
        let next = if entries.len() == usize::try_from(limit).unwrap_or(usize::MAX) {
            entries.last().map(|e| e.id)
        } else {
            None
        };
        Ok((entries, next))
    }
}
