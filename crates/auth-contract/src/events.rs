//! The auth service's events (SPEC §4), as every other party reads them: the channel names,
//! the ids a payload names, and one typed [`Revocation`] that the contract client's cache, the
//! auth service's store cache and the socket hub all apply, so "which event ends what" is
//! decided here once.

use serde_json::Value;

use crate::AuthContext;

/// Every auth event: the pattern each follower subscribes to.
pub const ALL: &str = "auth:*";
/// Changes to clients (allowlists, keys): what the gateway's CORS origins follow.
pub const CLIENTS: &str = "auth:client.*";

pub const USER_REGISTERED: &str = "auth:user.registered";
pub const USER_LOGIN: &str = "auth:user.login";
pub const USER_LOGOUT: &str = "auth:user.logout";
pub const USER_PASSWORD_CHANGED: &str = "auth:user.password_changed";
pub const USER_DISABLED: &str = "auth:user.disabled";
pub const USER_ROLE_CHANGED: &str = "auth:user.role_changed";
pub const SESSION_CREATED: &str = "auth:session.created";
pub const SESSION_TERMINATED: &str = "auth:session.terminated";
pub const SESSION_DELETED: &str = "auth:session.deleted";
pub const SESSIONS_BULK_TERMINATED: &str = "auth:sessions.bulk_terminated";
pub const SESSION_ACTIVITY_UPDATED: &str = "auth:session.activity_updated";
pub const TOKEN_REFRESHED: &str = "auth:token.refreshed";
pub const TOKEN_REVOKED: &str = "auth:token.revoked";
pub const API_KEY_REVOKED: &str = "auth:api_key.revoked";
pub const API_KEY_ROTATED: &str = "auth:api_key.rotated";
pub const CLIENT_UPDATED: &str = "auth:client.updated";

/// Account events, forwarded to the user's own sockets (cross-device sync, SPEC §7).
pub fn is_account_event(channel: &str) -> bool {
    ["auth:session.", "auth:sessions.", "auth:user."].iter().any(|p| channel.starts_with(p))
}

/// Ids of sessions, credentials (PAT, API key and service token ids, and `jti`s), users and
/// clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    pub sessions: Vec<String>,
    pub credentials: Vec<String>,
    pub users: Vec<String>,
    pub clients: Vec<String>,
}

fn text(event: &Value, field: &str) -> Option<String> {
    event.get(field).and_then(Value::as_str).map(str::to_owned)
}

fn list(event: &Value, field: &str) -> Vec<String> {
    event
        .get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The access-token id an event names (a logout's), whose revocation a cache must re-read.
pub fn jti(event: &Value) -> Option<String> {
    text(event, "jti")
}

/// A field's id and a list field's ids.
fn both(event: &Value, one: &str, many: &str) -> Vec<String> {
    let mut ids: Vec<String> = text(event, one).into_iter().collect();
    ids.extend(list(event, many));
    ids
}

impl Ids {
    /// Every stored record a payload names, whatever the event: what a cache of stored
    /// records drops (a session's activity, a user's password, a rotated key's successor all
    /// change rows). An access token's `jti` is no record: see [`jti`].
    pub fn named_in(event: &Value) -> Self {
        let mut credentials = both(event, "credential_id", "credential_ids");
        credentials.extend(text(event, "new_credential_id"));
        Self {
            sessions: both(event, "session_id", "session_ids"),
            credentials,
            users: both(event, "user_id", "user_ids"),
            clients: both(event, "client_id", "client_ids"),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty() && self.credentials.is_empty() && self.users.is_empty() && self.clients.is_empty()
    }

    /// Whether a context has one of these ids (its session, credential, user or client).
    pub fn matches(&self, context: &AuthContext) -> bool {
        let has = |ids: &[String], id: &Option<String>| id.as_ref().is_some_and(|id| ids.contains(id));
        has(&self.sessions, &context.session_id)
            || has(&self.credentials, &context.credential_id)
            || has(&self.users, &context.user_id)
            || has(&self.clients, &context.client_id)
    }
}

/// What an auth event means for validated contexts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocation {
    /// Contexts that have ended: their connections close (4409) and cached answers go.
    pub ended: Ids,
    /// Contexts still valid whose cached answers are out of date (a changed role, changed
    /// allowlists, a rotated key's new expiry): cached answers go, connections stay.
    pub changed: Ids,
}

impl Revocation {
    /// What an event ends or changes; `None` for events that do neither (a login, a refresh,
    /// activity) and for a payload that is not a JSON object.
    pub fn from_event(channel: &str, payload: &str) -> Option<Self> {
        let event: Value = serde_json::from_str(payload).ok().filter(Value::is_object)?;
        Self::from_value(channel, &event)
    }

    /// [`Self::from_event`] for a payload already parsed.
    pub fn from_value(channel: &str, event: &Value) -> Option<Self> {
        let mut ended = Ids::default();
        let mut changed = Ids::default();
        let credentials = || {
            let mut ids: Vec<String> = text(event, "credential_id").into_iter().collect();
            ids.extend(text(event, "jti"));
            ids
        };
        match channel {
            SESSION_TERMINATED | SESSION_DELETED | SESSIONS_BULK_TERMINATED | USER_LOGOUT | TOKEN_REVOKED => {
                ended.sessions = both(event, "session_id", "session_ids");
                ended.credentials = credentials();
            }
            // The session that changed the password is kept (`session_id`); the others end.
            USER_PASSWORD_CHANGED => {
                ended.sessions = list(event, "session_ids");
                ended.credentials = credentials();
            }
            // The key and the SDK sessions opened with it end; the client's other answers are
            // refetched.
            API_KEY_REVOKED => {
                ended.sessions = both(event, "session_id", "session_ids");
                ended.credentials = credentials();
                changed.clients = both(event, "client_id", "client_ids");
            }
            // The old key lives on until its grace ends: answers about it now carry an expiry.
            API_KEY_ROTATED => {
                changed.credentials = credentials();
                changed.clients = both(event, "client_id", "client_ids");
            }
            CLIENT_UPDATED => changed.clients = both(event, "client_id", "client_ids"),
            USER_DISABLED => {
                ended.users = both(event, "user_id", "user_ids");
                ended.sessions = both(event, "session_id", "session_ids");
                ended.clients = list(event, "client_ids");
            }
            USER_ROLE_CHANGED => changed.users = both(event, "user_id", "user_ids"),
            _ => return None,
        }
        Some(Self { ended, changed })
    }

    /// Whether a cached answer about `context` must go.
    pub fn affects(&self, context: &AuthContext) -> bool {
        self.ended.matches(context) || self.changed.matches(context)
    }

    /// Whether `context` has ended: its connections close.
    pub fn ends(&self, context: &AuthContext) -> bool {
        self.ended.matches(context)
    }

    pub fn is_empty(&self) -> bool {
        self.ended.is_empty() && self.changed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Kind;

    fn context(kind: Kind, user: &str, session: Option<&str>, credential: &str, client: Option<&str>) -> AuthContext {
        AuthContext {
            subject: user.into(),
            kind,
            user_id: (!user.is_empty()).then(|| user.to_owned()),
            tenant_id: client.map(str::to_owned),
            client_id: client.map(str::to_owned),
            session_id: session.map(str::to_owned),
            credential_id: Some(credential.into()),
            role: None,
            scopes: crate::scope::Scopes::all(),
            expires_at: None,
            rate_limit: None,
        }
    }

    fn revocation(channel: &str, payload: serde_json::Value) -> Option<Revocation> {
        Revocation::from_event(channel, &payload.to_string())
    }

    #[test]
    fn a_logout_ends_its_session_and_token() {
        let r = revocation(USER_LOGOUT, json!({"user_id": "u", "session_id": "s", "jti": "j"})).unwrap();
        assert_eq!(r.ended.sessions, ["s"]);
        assert_eq!(r.ended.credentials, ["j"]);
        assert!(r.ended.users.is_empty(), "a logout ends one session, not the user");
        assert!(r.ends(&context(Kind::User, "u", Some("s"), "j", None)));
        assert!(!r.affects(&context(Kind::User, "u", Some("other"), "k", None)));
    }

    #[test]
    fn a_password_change_keeps_the_session_that_made_it() {
        let r =
            revocation(USER_PASSWORD_CHANGED, json!({"user_id": "u", "session_id": "kept", "session_ids": ["a", "b"]}))
                .unwrap();
        assert_eq!(r.ended.sessions, ["a", "b"]);
        assert!(!r.affects(&context(Kind::User, "u", Some("kept"), "j", None)));
    }

    #[test]
    fn disabling_ends_the_user_and_his_clients() {
        let r = revocation(USER_DISABLED, json!({"user_id": "u", "session_ids": ["s"], "client_ids": ["c1"]})).unwrap();
        assert_eq!(
            (r.ended.users.as_slice(), r.ended.clients.as_slice()),
            (["u".to_owned()].as_slice(), ["c1".to_owned()].as_slice())
        );
        assert!(r.ends(&context(Kind::ApiKey, "", None, "k", Some("c1"))));
        assert!(r.ends(&context(Kind::Pat, "u", None, "p", None)));
    }

    #[test]
    fn changes_refetch_without_ending() {
        let role = revocation(USER_ROLE_CHANGED, json!({"user_id": "u", "role": "admin"})).unwrap();
        let user = context(Kind::User, "u", Some("s"), "j", None);
        assert!(role.affects(&user) && !role.ends(&user));
        let rotated =
            revocation(API_KEY_ROTATED, json!({"client_id": "c", "credential_id": "old", "new_credential_id": "new"}))
                .unwrap();
        let key = context(Kind::ApiKey, "", None, "old", Some("c"));
        assert!(rotated.affects(&key) && !rotated.ends(&key));
        let updated = revocation(CLIENT_UPDATED, json!({"client_id": "c"})).unwrap();
        assert!(updated.affects(&key) && !updated.ends(&key));
    }

    #[test]
    fn a_revoked_key_ends_its_contexts_and_its_sdk_sessions_only() {
        let r = revocation(API_KEY_REVOKED, json!({"client_id": "c", "credential_id": "k", "session_ids": ["sdk1"]}))
            .unwrap();
        assert!(r.ends(&context(Kind::ApiKey, "", None, "k", Some("c"))));
        assert!(r.ends(&context(Kind::Sdk, "", Some("sdk1"), "j", Some("c"))));
        let other_key = context(Kind::ApiKey, "", None, "k2", Some("c"));
        assert!(!r.ends(&other_key) && r.affects(&other_key), "the client's other keys are refetched, not closed");
    }

    #[test]
    fn other_events_and_bad_payloads_revoke_nothing() {
        assert_eq!(revocation(USER_LOGIN, json!({"user_id": "u", "session_id": "s"})), None);
        assert_eq!(revocation(SESSION_ACTIVITY_UPDATED, json!({"session_id": "s"})), None);
        assert_eq!(Revocation::from_event(USER_LOGOUT, "not json"), None);
        assert_eq!(Revocation::from_event(USER_LOGOUT, "[1]"), None);
    }

    #[test]
    fn every_id_a_payload_names() {
        let ids = Ids::named_in(&json!({
            "user_id": "u", "session_id": "s", "session_ids": ["t"], "jti": "j",
            "credential_id": "old", "new_credential_id": "new", "client_ids": ["c"]
        }));
        assert_eq!(ids.sessions, ["s", "t"]);
        assert_eq!(ids.credentials, ["old", "new"]);
        assert_eq!(jti(&json!({"jti": "j", "credential_id": "old"})).as_deref(), Some("j"));
        assert_eq!((ids.users, ids.clients), (vec!["u".to_owned()], vec!["c".to_owned()]));
        assert!(
            is_account_event(SESSION_CREATED) && is_account_event(USER_LOGOUT) && !is_account_event(CLIENT_UPDATED)
        );
    }
}
