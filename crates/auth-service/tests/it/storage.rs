//! What storage holds: never a raw password, refresh token or access token; and the store's
//! own guarantees (atomic rotation, cleanup) on each backend.

use std::sync::Arc;

use auth_service::store::{RefreshToken, SessionKind, Store};
use serde_json::json;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::helpers::{Backend, PASSWORD, TestApp, spawn_app, unique_email};

fn store(app: &TestApp) -> Arc<dyn Store> {
    app.raw.store()
}

/// Every table is read back: the secrets a user was given appear nowhere.
async fn database_never_holds_raw_secrets(backend: Backend) {
    let app = spawn_app(backend).await;
    let email = unique_email("secrets");
    let first = app.signup(&email).await;
    let second = app.refreshed(&first.refresh).await;
    let logged_out = app.login(&email, crate::helpers::FIREFOX).await;
    app.post_auth("/logout", &logged_out.access, None).await;
    let dump = app.dump_tables().await;
    assert!(dump.contains(&email), "the dump is not reading the tables");
    assert!(dump.contains("$argon2id$v=19$m=19456,t=2,p=1$"));
    for secret in [
        PASSWORD,
        &first.refresh,
        &second.refresh,
        &logged_out.refresh,
        &first.access,
        &second.access,
        &logged_out.access,
    ] {
        assert!(!dump.contains(secret), "a raw secret is stored: {}…", &secret[..8]);
    }
    // Only the SHA-256 of each refresh token is kept.
    let hash = auth_service::tokens::sha256_hex(&second.refresh);
    assert!(dump.contains(&hash));
}

/// The store's rotation is a compare-and-swap: the second rotation of one token fails and
/// changes nothing.
async fn rotation_is_compare_and_swap(backend: Backend) {
    let app = spawn_app(backend).await;
    let tokens = app.signup(&unique_email("cas")).await;
    let store = store(&app);
    let hash = auth_service::tokens::sha256_hex(&tokens.refresh);
    let old = store.refresh_token_by_hash(&hash).await.expect("lookup").expect("present");
    let now = OffsetDateTime::now_utc();
    let next = |tag: &str| RefreshToken {
        id: Uuid::new_v4(),
        token_hash: format!("{tag}-{}", Uuid::new_v4()),
        session_id: old.session_id,
        session_kind: SessionKind::User,
        user_id: old.user_id,
        created_at: now,
        expires_at: now + Duration::hours(1),
        spent_at: None,
    };
    let winner = next("a");
    let loser = next("b");
    assert!(store.rotate_refresh_token(old.id, now, &winner).await.expect("rotate"));
    assert!(!store.rotate_refresh_token(old.id, now, &loser).await.expect("rotate"));
    assert!(store.refresh_token_by_hash(&winner.token_hash).await.expect("lookup").is_some());
    assert!(store.refresh_token_by_hash(&loser.token_hash).await.expect("lookup").is_none());
    let spent = store.refresh_token_by_hash(&hash).await.expect("lookup").expect("present");
    assert!(spent.spent_at.is_some());
}

/// Cleanup removes expired sessions, their refresh tokens and expired revocations, and a dry
/// run only counts.
async fn cleanup_removes_only_what_expired(backend: Backend) {
    let app = spawn_app(backend).await;
    let keep = app.signup(&unique_email("keep")).await;
    let gone = app.signup(&unique_email("gone")).await;
    app.post_auth("/logout", &gone.access, None).await;
    let store = store(&app);
    let now = OffsetDateTime::now_utc();
    let dry = store.cleanup(now, now + Duration::seconds(1), true).await.expect("dry run");
    assert_eq!((dry.sessions, dry.refresh_tokens), (1, 1), "{dry:?}");
    let again = store.cleanup(now, now + Duration::seconds(1), true).await.expect("dry run");
    assert_eq!(dry, again, "a dry run deleted something");
    let done = store.cleanup(now + Duration::hours(1), now + Duration::seconds(1), false).await.expect("cleanup");
    assert_eq!((done.sessions, done.refresh_tokens, done.revoked_jtis), (1, 1, 1), "{done:?}");
    assert_eq!((done.sdk_sessions, done.personal_access_tokens, done.api_keys), (0, 0, 0), "{done:?}");
    let session = Uuid::parse_str(&keep.session_id).expect("uuid");
    assert!(store.session(session).await.expect("lookup").is_some());
    let keep_hash = auth_service::tokens::sha256_hex(&keep.refresh);
    assert!(store.refresh_token_by_hash(&keep_hash).await.expect("lookup").is_some());
    assert_eq!(json!(done.sessions), json!(1));
}

crate::on_both_backends!(
    database_never_holds_raw_secrets,
    rotation_is_compare_and_swap,
    cleanup_removes_only_what_expired,
);
