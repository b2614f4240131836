//! One `Store` conformance suite, the contract every storage backend keeps, run against
//! SQLite, PostgreSQL and the cached store in front of each: what each method returns, orders,
//! refuses and changes. The safety net under any reorganisation of the store.

use std::sync::Arc;

use auth_contract::{Role, scope::Scopes};
use auth_service::store::{
    ApiKey, CachedStore, Client, ClientChange, NewAudit, PersonalAccessToken, RateLimit, RefreshToken, SdkSession,
    ServiceToken, Session, SessionKind, Store, StoreError, User, from_ms, to_ms,
};
use serde_json::json;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::helpers::{Backend, spawn_app};

/// Now, at the storage's millisecond precision.
fn now() -> OffsetDateTime {
    from_ms(to_ms(OffsetDateTime::now_utc()))
}

fn scopes(list: &[&str]) -> Scopes {
    Scopes::parse_list(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).expect("scopes")
}

fn user(email: &str, at: OffsetDateTime) -> User {
    User {
        id: Uuid::new_v4(),
        name: "Ada".into(),
        email: email.into(),
        password_hash: "$argon2id$stand-in".into(),
        role: Role::Member,
        disabled: false,
        created_at: at,
    }
}

fn session(user_id: Uuid, at: OffsetDateTime) -> Session {
    Session {
        id: Uuid::new_v4(),
        user_id,
        device: "Firefox on Linux".into(),
        user_agent: Some("Firefox/128.0".into()),
        ip: "203.0.113.7".into(),
        created_at: at,
        last_activity: at,
        expires_at: at + Duration::days(30),
        ended_at: None,
        end_reason: None,
    }
}

fn refresh(session_id: Uuid, kind: SessionKind, user_id: Option<Uuid>, at: OffsetDateTime) -> RefreshToken {
    RefreshToken {
        id: Uuid::new_v4(),
        token_hash: format!("hash-{}", Uuid::new_v4()),
        session_id,
        session_kind: kind,
        user_id,
        created_at: at,
        expires_at: at + Duration::days(7),
        spent_at: None,
    }
}

fn key(client_id: Uuid, at: OffsetDateTime) -> ApiKey {
    ApiKey {
        id: Uuid::new_v4(),
        client_id,
        name: "default".into(),
        key_hash: format!("hash-{}", Uuid::new_v4()),
        prefix: "pck_AbCd".into(),
        last_four: "wxyz".into(),
        scopes: scopes(&["orders:*"]),
        created_at: at,
        last_used_at: None,
        expires_at: None,
        rotated_to: None,
        revoked_at: None,
    }
}

async fn users_and_sessions(store: &dyn Store, t: OffsetDateTime) {
    let ada = user(&format!("ada-{}@example.com", Uuid::new_v4()), t);
    let bob = user(&format!("bob-{}@example.com", Uuid::new_v4()), t + Duration::seconds(1));
    store.insert_user(&ada).await.expect("insert");
    store.insert_user(&bob).await.expect("insert");
    let twin = User { id: Uuid::new_v4(), ..ada.clone() };
    assert!(matches!(store.insert_user(&twin).await, Err(StoreError::Conflict(_))), "a taken email conflicts");
    assert_eq!(store.user_by_id(ada.id).await.expect("read"), Some(ada.clone()));
    assert_eq!(store.user_by_email(&ada.email).await.expect("read"), Some(ada.clone()));
    assert_eq!(store.user_by_email("nobody@example.com").await.expect("read"), None);

    store.set_password_hash(ada.id, "$argon2id$new", t).await.expect("password");
    assert!(store.set_user_role(ada.id, Role::Admin, t).await.expect("role"));
    assert!(store.set_user_disabled(ada.id, true, t).await.expect("disable"));
    let changed = store.user_by_id(ada.id).await.expect("read").expect("ada");
    assert_eq!((changed.password_hash.as_str(), changed.role, changed.disabled), ("$argon2id$new", Role::Admin, true));
    assert!(!store.set_user_disabled(Uuid::new_v4(), true, t).await.expect("unknown"), "no such user");
    assert!(!store.set_user_role(Uuid::new_v4(), Role::Admin, t).await.expect("unknown"));

    // Newest first; the cursor is strictly after.
    let page = store.list_users(None, 1).await.expect("list");
    assert_eq!(page.iter().map(|u| u.id).collect::<Vec<_>>(), [bob.id]);
    let next = store.list_users(Some((to_ms(bob.created_at), bob.id)), 10).await.expect("list");
    assert_eq!(next.first().map(|u| u.id), Some(ada.id));

    // Sessions: live ones oldest first; ended, expired and idle ones are not live.
    let first = session(bob.id, t - Duration::minutes(3));
    let second = session(bob.id, t - Duration::minutes(2));
    let expired = Session { expires_at: t - Duration::seconds(1), ..session(bob.id, t - Duration::minutes(1)) };
    let idle = Session { last_activity: t - Duration::hours(2), ..session(bob.id, t - Duration::hours(2)) };
    for s in [&first, &second, &expired, &idle] {
        store.insert_session(s, &refresh(s.id, SessionKind::User, Some(bob.id), t)).await.expect("session");
    }
    assert_eq!(store.session(first.id).await.expect("read"), Some(first.clone()));
    assert_eq!(store.session(Uuid::new_v4()).await.expect("read"), None);
    let cutoff = t - Duration::minutes(30);
    let live: Vec<Uuid> = store.live_sessions(bob.id, t, cutoff).await.expect("live").iter().map(|s| s.id).collect();
    assert_eq!(live, [first.id, second.id]);
    assert!(store.count_live_sessions(t, cutoff).await.expect("count") >= 2);
    store.touch_session(idle.id, t).await.expect("touch");
    assert_eq!(store.session(idle.id).await.expect("read").map(|s| s.last_activity), Some(t));
    assert_eq!(store.live_sessions(bob.id, t, cutoff).await.expect("live").len(), 3, "a touched session is live again");
    let mut ended = store.end_sessions(&[first.id, expired.id], t, "logout").await.expect("end");
    ended.sort();
    let mut expected = vec![first.id, expired.id];
    expected.sort();
    assert_eq!(ended, expected, "every session not yet ended is ended (an expired one too)");
    let again = store.end_sessions(&[first.id, expired.id], t, "logout").await.expect("end");
    assert!(again.is_empty(), "ending twice ends nothing");
    let read = store.session(first.id).await.expect("read").expect("first");
    assert_eq!((read.ended_at, read.end_reason.as_deref()), (Some(t), Some("logout")));

    // Refresh tokens rotate exactly once.
    let old = refresh(second.id, SessionKind::User, Some(bob.id), t);
    store.insert_session(&session(bob.id, t), &old).await.expect("session");
    assert_eq!(store.refresh_token_by_hash(&old.token_hash).await.expect("read"), Some(old.clone()));
    let new = refresh(second.id, SessionKind::User, Some(bob.id), t);
    assert!(store.rotate_refresh_token(old.id, t, &new).await.expect("rotate"));
    let other = refresh(second.id, SessionKind::User, Some(bob.id), t);
    assert!(!store.rotate_refresh_token(old.id, t, &other).await.expect("rotate"), "a spent token does not rotate");
    assert_eq!(store.refresh_token_by_hash(&old.token_hash).await.expect("read").and_then(|r| r.spent_at), Some(t));
    assert_eq!(store.refresh_token_by_hash(&new.token_hash).await.expect("read"), Some(new));
    assert_eq!(store.refresh_token_by_hash(&other.token_hash).await.expect("read"), None, "nothing else changed");
}

async fn personal_access_tokens(store: &dyn Store, t: OffsetDateTime) {
    let owner = user(&format!("pat-{}@example.com", Uuid::new_v4()), t);
    store.insert_user(&owner).await.expect("user");
    let pat = |at: OffsetDateTime| PersonalAccessToken {
        id: Uuid::new_v4(),
        user_id: owner.id,
        name: "cli".into(),
        token_hash: format!("hash-{}", Uuid::new_v4()),
        prefix: "pcp_AbCd".into(),
        last_four: "wxyz".into(),
        scopes: scopes(&["repos:read"]),
        created_at: at,
        expires_at: Some(at + Duration::days(30)),
        last_used_at: None,
        revoked_at: None,
        legacy_id: None,
    };
    let (older, newer) = (pat(t - Duration::minutes(1)), pat(t));
    store.insert_pat(&older).await.expect("pat");
    store.insert_pat(&newer).await.expect("pat");
    assert_eq!(store.pat_by_hash(&older.token_hash).await.expect("read"), Some(older.clone()));
    let listed: Vec<Uuid> = store.pats_for_user(owner.id).await.expect("list").iter().map(|p| p.id).collect();
    assert_eq!(listed, [newer.id, older.id], "newest first");
    store.touch_pat(older.id, t).await.expect("touch");
    assert_eq!(store.pat_by_hash(&older.token_hash).await.expect("read").and_then(|p| p.last_used_at), Some(t));
    assert!(!store.revoke_pat(Uuid::new_v4(), older.id, t).await.expect("revoke"), "not another user's");
    assert!(store.revoke_pat(owner.id, older.id, t).await.expect("revoke"));
    assert!(!store.revoke_pat(owner.id, older.id, t).await.expect("revoke"), "not twice");
    let listed: Vec<Uuid> = store.pats_for_user(owner.id).await.expect("list").iter().map(|p| p.id).collect();
    assert_eq!(listed, [newer.id], "revoked ones are not listed");
    assert_eq!(store.pat_by_hash(&older.token_hash).await.expect("read").and_then(|p| p.revoked_at), Some(t));

    // An imported one keeps its legacy id and when it was last used; a second token with the
    // same hash is a conflict (what makes an import idempotent).
    let imported = PersonalAccessToken {
        legacy_id: Some("clx0legacy0id".into()),
        last_used_at: Some(t - Duration::days(3)),
        expires_at: None,
        ..pat(t - Duration::days(90))
    };
    store.insert_pat(&imported).await.expect("imported pat");
    assert_eq!(store.pat_by_hash(&imported.token_hash).await.expect("read"), Some(imported.clone()));
    let again = PersonalAccessToken { id: Uuid::new_v4(), ..imported.clone() };
    assert!(matches!(store.insert_pat(&again).await, Err(StoreError::Conflict(_))), "same hash stored twice");
}

async fn clients_keys_and_sdk_sessions(store: &dyn Store, t: OffsetDateTime) {
    let owner = user(&format!("client-{}@example.com", Uuid::new_v4()), t);
    store.insert_user(&owner).await.expect("user");
    let origin = format!("https://{}.example.com", Uuid::new_v4().simple());
    let client = Client {
        id: Uuid::new_v4(),
        owner_id: owner.id,
        name: "Shop".into(),
        ip_allowlist: vec!["10.0.0.0/8".into()],
        allowed_origins: vec![origin.clone()],
        rate_limit: None,
        created_at: t,
        updated_at: t,
    };
    let first = key(client.id, t);
    store.insert_client(&client, &first).await.expect("client");
    assert_eq!(store.client(client.id).await.expect("read"), Some(client.clone()));
    assert_eq!(store.clients_for_owner(owner.id).await.expect("list"), std::slice::from_ref(&client));
    assert!(store.all_allowed_origins().await.expect("origins").contains(&origin));

    let later = t + Duration::seconds(5);
    let limit = RateLimit { requests: 100, per_ms: 60_000 };
    for change in [
        ClientChange::IpAllowlist(vec!["192.0.2.0/24".into()]),
        ClientChange::AllowedOrigins(vec![]),
        ClientChange::RateLimit(Some(limit)),
    ] {
        store.update_client(client.id, &change, later).await.expect("update");
    }
    let updated = store.client(client.id).await.expect("read").expect("client");
    assert_eq!(updated.ip_allowlist, ["192.0.2.0/24"]);
    assert!(updated.allowed_origins.is_empty());
    assert_eq!((updated.rate_limit, updated.updated_at), (Some(limit), later));
    assert!(!store.all_allowed_origins().await.expect("origins").contains(&origin));

    // Keys: one rotation and one revocation each, and their reads.
    assert_eq!(store.api_key(first.id).await.expect("read"), Some(first.clone()));
    assert_eq!(store.api_key_by_hash(&first.key_hash).await.expect("read"), Some(first.clone()));
    let second = key(client.id, t + Duration::seconds(1));
    store.insert_api_key(&second).await.expect("key");
    let successor = key(client.id, t + Duration::seconds(2));
    let grace = t + Duration::hours(1);
    assert!(store.rotate_api_key(first.id, grace, &successor).await.expect("rotate"));
    let spare = key(client.id, t);
    assert!(!store.rotate_api_key(first.id, grace, &spare).await.expect("rotate"), "rotates once");
    assert_eq!(store.api_key(spare.id).await.expect("read"), None, "a refused rotation stores nothing");
    let rotated = store.api_key(first.id).await.expect("read").expect("first");
    assert_eq!((rotated.expires_at, rotated.rotated_to), (Some(grace), Some(successor.id)));
    assert!(store.revoke_api_key(second.id, t).await.expect("revoke"));
    assert!(!store.revoke_api_key(second.id, t).await.expect("revoke"), "not twice");
    store.touch_api_key(successor.id, later).await.expect("touch");
    assert_eq!(store.api_key(successor.id).await.expect("read").and_then(|k| k.last_used_at), Some(later));
    let listed: Vec<Uuid> = store.api_keys_for_client(client.id).await.expect("list").iter().map(|k| k.id).collect();
    assert_eq!(listed, [first.id, second.id, successor.id], "oldest first, revoked ones included");

    // SDK sessions.
    let sdk = |key_id: Uuid| SdkSession {
        id: Uuid::new_v4(),
        client_id: client.id,
        api_key_id: key_id,
        external_user_id: "customer-42".into(),
        scopes: scopes(&["orders:read"]),
        ip: "203.0.113.7".into(),
        created_at: t,
        last_activity: t,
        expires_at: t + Duration::days(1),
        ended_at: None,
        end_reason: None,
    };
    let (one, two, other) = (sdk(successor.id), sdk(successor.id), sdk(first.id));
    for s in [&one, &two, &other] {
        store.insert_sdk_session(s, &refresh(s.id, SessionKind::Sdk, None, t)).await.expect("sdk");
    }
    assert_eq!(store.sdk_session(one.id).await.expect("read"), Some(one.clone()));
    store.touch_sdk_session(one.id, later).await.expect("touch");
    assert_eq!(store.sdk_session(one.id).await.expect("read").map(|s| s.last_activity), Some(later));
    assert!(store.end_sdk_session(two.id, t, "logout").await.expect("end"));
    assert!(!store.end_sdk_session(two.id, t, "logout").await.expect("end"), "not twice");
    let ended = store.end_sdk_sessions_for_keys(&[successor.id], t, "revoked").await.expect("end");
    assert_eq!(ended, [one.id], "only the key's live sessions");
    assert_eq!(store.sdk_session(other.id).await.expect("read").and_then(|s| s.ended_at), None);
}

async fn tokens_revocations_and_audit(store: &dyn Store, t: OffsetDateTime) {
    let token = ServiceToken {
        id: Uuid::new_v4(),
        service_name: "gateway".into(),
        token_hash: format!("hash-{}", Uuid::new_v4()),
        created_at: t,
        expires_at: t + Duration::minutes(10),
    };
    store.insert_service_token(&token).await.expect("token");
    assert_eq!(store.service_token_by_hash(&token.token_hash).await.expect("read"), Some(token.clone()));
    assert_eq!(store.service_token(token.id).await.expect("read"), Some(token));
    assert_eq!(store.service_token(Uuid::new_v4()).await.expect("read"), None);

    let jti = Uuid::new_v4().to_string();
    assert!(!store.is_jti_revoked(&jti).await.expect("read"));
    store.revoke_jti(&jti, t + Duration::minutes(15)).await.expect("revoke");
    store.revoke_jti(&jti, t + Duration::minutes(15)).await.expect("revoking twice is no error");
    assert!(store.is_jti_revoked(&jti).await.expect("read"));

    let who = user(&format!("audit-{}@example.com", Uuid::new_v4()), t);
    store.insert_user(&who).await.expect("user");
    for (i, action) in ["login", "logout", "pat_created"].into_iter().enumerate() {
        let entry = NewAudit {
            user_id: Some(who.id),
            action,
            outcome: "success",
            ip: Some("203.0.113.7".into()),
            detail: json!({"n": i}),
            at: t + Duration::seconds(i64::try_from(i).unwrap_or(0)),
        };
        store.insert_audit(&entry).await.expect("audit");
    }
    let page = store.audit_for_user(who.id, None, 2).await.expect("audit");
    assert_eq!(page.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["pat_created", "logout"], "newest first");
    assert_eq!(page[0].detail, json!({"n": 2}));
    let rest = store.audit_for_user(who.id, Some(page[1].id), 10).await.expect("audit");
    assert_eq!(rest.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["login"], "strictly older than the cursor");

    // A dry run counts without removing.
    let dry = store.cleanup(t + Duration::days(365), t + Duration::days(365), true).await.expect("dry run");
    assert!(dry.revoked_jtis >= 1 && dry.service_tokens >= 1, "{dry:?}");
    assert!(store.is_jti_revoked(&jti).await.expect("read"), "a dry run removes nothing");
    store.ping().await.expect("ping");
}

async fn conformance(store: Arc<dyn Store>) {
    let t = now();
    users_and_sessions(store.as_ref(), t).await;
    personal_access_tokens(store.as_ref(), t).await;
    clients_keys_and_sdk_sessions(store.as_ref(), t).await;
    tokens_revocations_and_audit(store.as_ref(), t).await;
}

/// The backend itself.
async fn store_conformance(backend: Backend) {
    let app = spawn_app(backend).await;
    conformance(app.raw.store()).await;
}

/// The read-through cache in front of it keeps the same contract.
async fn cached_store_conformance(backend: Backend) {
    let app = spawn_app(backend).await;
    conformance(Arc::new(CachedStore::new(app.raw.store()))).await;
}

crate::on_both_backends!(store_conformance, cached_store_conformance);
