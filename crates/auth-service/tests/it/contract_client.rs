//! The contract client (`auth_contract::AuthClient`) against a real auth service: caching,
//! coalescing, revocation through the bus, and failing closed during an outage.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use auth_contract::{AuthClient, ClientError, ErrorCode, Kind, Liveness};
use platform::bus::EventBus;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, TestApp, expect_status, spawn_app, spawn_app_with, unique_email};

/// The bus a separate service would follow: its own Redis subscription in distributed mode,
/// the process's bus in embedded mode.
fn service_bus(app: &TestApp, backend: &Backend) -> Arc<dyn EventBus> {
    match backend {
        Backend::Sqlite => app.bus.clone(),
        Backend::Postgres { redis_url, .. } => {
            let pool = deadpool_redis::Config::from_url(redis_url)
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                .expect("pool");
            Arc::new(platform::bus::RedisBus::new(redis_url, pool).expect("bus"))
        }
    }
}

/// Waits until `check` holds, polling every 2 ms, and returns how long it took.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("not within {limit:?}");
}

async fn refused(client: &AuthClient, token: &str) -> bool {
    matches!(client.validate(token, None, None).await, Err(ClientError::Denied { .. }))
}

/// The second validation of a token makes no call; ten concurrent validations of a new token
/// make one.
async fn cache_and_coalescing(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.contract_client();
    let user = app.signup(&unique_email("cache")).await;
    let context = client.validate(&user.access, None, None).await.expect("valid");
    assert_eq!((context.kind, context.user_id.as_deref()), (Kind::User, Some(user.user_id.as_str())));
    let calls = client.rpc_count();
    for _ in 0..5 {
        client.validate(&user.access, None, None).await.expect("cached");
    }
    assert_eq!(client.rpc_count(), calls, "cached validations made calls");

    let other = app.signup(&unique_email("coalesce")).await;
    let before = client.rpc_count();
    let results = futures::future::join_all((0..10).map(|_| client.validate(&other.access, None, None))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(client.rpc_count() - before, 1, "ten concurrent validations were not coalesced");

    // Refusals are cached briefly too.
    let before = client.rpc_count();
    for _ in 0..3 {
        let err = client.validate("garbage-token", None, None).await.expect_err("refused");
        assert_eq!(err.code(), ErrorCode::TokenMalformed);
    }
    assert_eq!(client.rpc_count() - before, 1);

    // The cache key holds only the decision's inputs: a user token's answer does not depend
    // on the origin, so another origin is the same question.
    let before = client.rpc_count();
    client.validate(&user.access, None, Some("https://a.example")).await.expect("valid");
    assert_eq!(client.rpc_count() - before, 0);
}

/// Logout and PAT revocation make cached tokens refused within 100 ms, through the bus.
async fn revocation_reaches_the_cache(backend: Backend) {
    let app = spawn_app(backend.clone()).await;
    let client = app.contract_client();
    client.follow(service_bus(&app, &backend)).await.expect("follow");
    let user = app.signup(&unique_email("revoke")).await;
    let pat =
        expect_status(app.post_auth("/tokens", &user.access, Some(&json!({"name": "r"}))).await, StatusCode::CREATED)
            .await;
    let pat_id = pat["id"].as_str().expect("id").to_owned();
    let pat = pat["token"].as_str().expect("token").to_owned();
    client.validate(&user.access, None, None).await.expect("valid");
    client.validate(&pat, None, None).await.expect("valid");

    let revoke = app.delete_auth(&format!("/tokens/{pat_id}"), &user.access).await;
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    let took = within(Duration::from_millis(100), async || refused(&client, &pat).await).await;
    eprintln!("PAT revocation reached the client cache in {took:?}");
    assert!(!refused(&client, &user.access).await, "the user's session was not revoked");

    let logout = app.post_auth("/logout", &user.access, None).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let took = within(Duration::from_millis(100), async || refused(&client, &user.access).await).await;
    eprintln!("logout reached the client cache in {took:?}");
}

/// An answer in flight when its revocation is applied is not kept: a delay proxy holds the
/// auth service's "valid" until the client has applied the logout event, and the next
/// validation asks again and is refused (no hoping to hit a window).
async fn an_answer_in_flight_during_its_revocation_is_not_cached(backend: Backend) {
    let app = spawn_app(backend.clone()).await;
    let proxy = testkit::DelayProxy::start(app.grpc_addr).await;
    let client = app.contract_client_at(&format!("http://{}", proxy.addr));
    let user = app.signup(&unique_email("race")).await;
    let mut events = app.events().await;
    // The service token is fetched before anything is held.
    client.list_allowed_origins().await.expect("origins");

    proxy.hold();
    let validating = {
        let (client, token) = (client.clone(), user.access.clone());
        tokio::spawn(async move { client.validate(&token, None, None).await })
    };
    within(Duration::from_secs(5), async || proxy.held_bytes() > 0).await;
    let logout = app.post_auth("/logout", &user.access, None).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let event = testkit::next_event(&mut events, "auth:user.logout", |e| e["user_id"] == json!(user.user_id)).await;
    client.apply_event("auth:user.logout", &event.to_string());
    proxy.release();
    // Answered before the revocation: either outcome is honest for this one request.
    let _ = validating.await.expect("task");
    assert!(refused(&client, &user.access).await, "an answer fetched before the revocation was cached after it");

    // Someone else's revocation meanwhile does not cost this answer its place in the cache.
    let other = app.signup(&unique_email("race-other")).await;
    let bystander = app.signup(&unique_email("race-bystander")).await;
    proxy.hold();
    let validating = {
        let (client, token) = (client.clone(), bystander.access.clone());
        tokio::spawn(async move { client.validate(&token, None, None).await })
    };
    within(Duration::from_secs(5), async || proxy.held_bytes() > 0).await;
    client.apply_event(
        "auth:user.logout",
        &json!({"user_id": other.user_id, "session_id": other.session_id}).to_string(),
    );
    proxy.release();
    validating.await.expect("task").expect("valid");
    let calls = client.rpc_count();
    client.validate(&bystander.access, None, None).await.expect("cached");
    assert_eq!(client.rpc_count(), calls, "an unrelated revocation made the answer uncacheable");
}

/// A user's access token does not depend on `Origin`, so a new origin is a cache hit: an
/// attacker cannot force misses (and calls to the auth service) by varying it.
async fn origin_keys_only_the_kinds_whose_decision_uses_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.contract_client();
    let user = app.signup(&unique_email("origin-key")).await;
    client.validate(&user.access, None, Some("https://a.example.com")).await.expect("valid");
    let calls = client.rpc_count();
    for i in 0..5 {
        let origin = format!("https://{i}.attacker.example");
        client.validate(&user.access, None, Some(&origin)).await.expect("valid");
    }
    client.validate(&user.access, None, None).await.expect("valid");
    assert_eq!(client.rpc_count(), calls, "a new Origin missed the cache for a user token");

    // An SDK token's answer does depend on it, cached or not.
    let shop =
        app.register_client(&user, json!({"name": "Shop", "allowed_origins": ["https://shop.example.com"]})).await;
    let session = app
        .http
        .post(app.url("/sdk/session"))
        .header("x-api-key", &shop.key)
        .json(&json!({"external_user_id": "u-1"}))
        .send()
        .await
        .expect("request");
    let sdk = expect_status(session, StatusCode::CREATED).await["access_token"].as_str().expect("token").to_owned();
    client.validate(&sdk, None, None).await.expect("no origin: not origin-checked");
    client.validate(&sdk, None, Some("https://shop.example.com")).await.expect("allowed origin");
    for _ in 0..2 {
        let refused = client.validate(&sdk, None, Some("https://evil.example.com")).await.expect_err("foreign origin");
        assert_eq!(refused.code(), ErrorCode::OriginNotAllowed);
    }
    client.validate(&sdk, None, Some("https://shop.example.com")).await.expect("allowed origin, cached");
}

/// Disabling a user ends his clients' API-key contexts in every cache (the event names the
/// clients), and a role change reaches every cache too (`auth:user.role_changed`).
async fn disable_and_role_change_reach_the_cache(backend: Backend) {
    use auth_contract::Role;
    let app = spawn_app(backend.clone()).await;
    let client = app.contract_client();
    client.follow(service_bus(&app, &backend)).await.expect("follow");
    let admin_email = unique_email("cache-admin");
    app.signup(&admin_email).await;
    app.service.set_role_as_operator(&admin_email, Role::Admin).await.expect("promote");
    let admin = app.login(&admin_email, crate::helpers::FIREFOX).await;
    let owner = app.signup(&unique_email("cache-owner")).await;
    let shop = app.register_client(&owner, json!({"name": "Shop"})).await;

    let member = client.validate(&owner.access, None, None).await.expect("valid");
    assert_eq!(member.role, Some(auth_contract::Role::Member));
    let path = format!("/admin/users/{}/role", owner.user_id);
    let role = app.put_auth(&path, &admin.access, &json!({"role": "admin"})).await;
    expect_status(role, StatusCode::OK).await;
    within(Duration::from_millis(500), async || {
        client.validate(&owner.access, None, None).await.is_ok_and(|c| c.role == Some(auth_contract::Role::Admin))
    })
    .await;

    client.validate_api_key(&shop.key, None, None).await.expect("valid key");
    let disable = app.post_auth(&format!("/admin/users/{}/disable", owner.user_id), &admin.access, None).await;
    assert_eq!(disable.status(), StatusCode::NO_CONTENT);
    within(Duration::from_millis(500), async || client.validate_api_key(&shop.key, None, None).await.is_err()).await;
}

/// `cargo xtask users set-role` goes through `set_role_as_operator`: audited, and announced
/// on the bus so running caches drop the user's contexts.
async fn an_operators_role_change_is_audited_and_announced(backend: Backend) {
    let app = spawn_app(backend.clone()).await;
    let bus = service_bus(&app, &backend);
    let client = app.contract_client();
    client.follow(bus.clone()).await.expect("follow");
    let email = unique_email("operator-role");
    let user = app.signup(&email).await;
    assert_eq!(client.validate(&user.access, None, None).await.expect("valid").role, Some(auth_contract::Role::Member));
    let changed = app.service.set_role_as_operator(&email, auth_contract::Role::Admin).await.expect("set role");
    assert_eq!(changed.email, email);
    within(Duration::from_millis(500), async || {
        client.validate(&user.access, None, None).await.is_ok_and(|c| c.role == Some(auth_contract::Role::Admin))
    })
    .await;
    let audit = expect_status(app.get_auth("/audit?limit=5", &user.access).await, StatusCode::OK).await;
    let entries = audit.to_string();
    assert!(entries.contains("role_changed") && entries.contains("operator"), "{entries}");
}

/// Auth service down: cached tokens still pass until they expire, uncached ones get
/// `Unavailable` (fail closed), the breaker opens, and closes again when it returns.
async fn outage_fails_closed_and_recovers(backend: Backend) {
    let mut app = spawn_app_with(backend, &[]).await;
    let client = app.contract_client();
    let cached = app.signup(&unique_email("outage-cached")).await;
    let uncached = app.signup(&unique_email("outage-new")).await;
    client.validate(&cached.access, None, None).await.expect("valid");

    app.stop().await;
    client.validate(&cached.access, None, None).await.expect("a cached token survives the outage");
    for _ in 0..3 {
        let err = client.validate(&uncached.access, None, None).await.expect_err("must fail closed");
        assert!(matches!(err, ClientError::Unavailable(_)), "{err:?}");
    }
    assert!(!client.breaker_closed(), "the breaker did not open");
    let started = Instant::now();
    let err = client.validate(&uncached.access, None, None).await.expect_err("open breaker");
    assert!(matches!(err, ClientError::Unavailable(_)));
    assert!(started.elapsed() < Duration::from_millis(50), "an open breaker must fail fast");

    app.start_again().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.validate(&uncached.access, None, None).await {
            Ok(context) => {
                assert_eq!(context.user_id.as_deref(), Some(uncached.user_id.as_str()));
                break;
            }
            Err(ClientError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(other) => panic!("did not recover: {other:?}"),
        }
    }
    assert!(client.breaker_closed());
}

/// A service token the auth service considers expired is renewed once and the call goes
/// through.
async fn service_token_is_renewed(backend: Backend) {
    let app = spawn_app_with(backend, &[("JWT_EXPIRES_IN", "1h"), ("SESSION_TIMEOUT_MINUTES", "120")]).await;
    let client = app.contract_client();
    let user = app.signup(&unique_email("renew")).await;
    let before = client.rpc_count();
    client.validate(&user.access, None, None).await.expect("valid");
    assert_eq!(client.rpc_count() - before, 2, "one issue, one validation");

    // Eleven minutes later (on the service's clock) the 10-minute service token is dead.
    app.clock.advance(time::Duration::minutes(11));
    let other = app.signup(&unique_email("renew-2")).await;
    let before = client.rpc_count();
    client.validate(&other.access, None, None).await.expect("valid after renewal");
    assert_eq!(client.rpc_count() - before, 3, "refused, renewed, validated");
}

/// `check_contexts` sees past the cache (a revoked context is ended at once, with no event
/// followed) and splits more references than one call may carry into several calls, answering
/// every one in order; it fails closed (an error, not "live") while the auth service is down.
async fn check_contexts_batches_and_sees_past_the_cache(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let client = app.contract_client();
    let email = unique_email("check");
    let stays = app.signup(&email).await;
    let leaves = app.login(&email, "Firefox/128.0").await;
    let live = client.validate(&stays.access, None, None).await.expect("valid").reference();
    let ending = client.validate(&leaves.access, None, None).await.expect("valid").reference();
    expect_status(app.post_auth("/logout", &leaves.access, None).await, StatusCode::NO_CONTENT).await;
    assert!(client.validate(&leaves.access, None, None).await.is_ok(), "this client follows no events: still cached");

    let mut refs = vec![live.clone(); auth_contract::client::MAX_BATCH];
    refs.push(ending.clone());
    let calls = client.rpc_count();
    let answers = client.check_contexts(&refs).await.expect("checked");
    assert_eq!(client.rpc_count() - calls, 2, "1001 references take two calls");
    assert_eq!(answers.len(), refs.len());
    assert!(answers[..auth_contract::client::MAX_BATCH].iter().all(|a| *a == Liveness::Live));
    assert_eq!(answers[auth_contract::client::MAX_BATCH], Liveness::Ended(ErrorCode::TokenRevoked));

    // Batches answer typed, in order: the context or the refusal.
    let request = |credential: &str| auth_contract::proto::ValidateRequest {
        credential: credential.to_owned(),
        ..Default::default()
    };
    let answers = client.validate_batch(vec![request(&stays.access), request("garbage")]).await.expect("batch");
    assert_eq!(answers[0].as_ref().ok().and_then(|c| c.user_id.clone()), Some(stays.user_id.clone()));
    assert_eq!(answers[1].as_ref().err().map(|r| r.code), Some(ErrorCode::TokenMalformed));

    app.stop().await;
    assert!(matches!(client.check_contexts(&[live]).await, Err(ClientError::Unavailable(_))));
}

/// A stream of revocations of other sessions and users leaves a cached answer cached: thousands
/// of unrelated events later (and while they keep coming) the token is still answered from the
/// cache, without a call.
async fn unrelated_revocations_leave_cached_answers_alone(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.contract_client();
    let user = app.signup(&unique_email("unrelated")).await;
    client.validate(&user.access, None, None).await.expect("valid");
    let calls = client.rpc_count();
    let presented = auth_contract::Presented::Token(&user.access);
    for n in 0..5_000 {
        let payload = format!(r#"{{"session_id":"other-session-{n}","user_id":"other-user-{n}"}}"#);
        client.apply_event(auth_contract::events::SESSION_TERMINATED, &payload);
        if n % 100 == 0 {
            assert!(client.cached_allowed(presented, None, None).await.is_some(), "dropped after {n} revocations");
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(client.cached_allowed(presented, None, None).await.is_some(), "dropped after the revocations");
    client.validate(&user.access, None, None).await.expect("valid");
    assert_eq!(client.rpc_count(), calls, "an unrelated revocation cost a call");
    // Unchecked across more revocations than the client remembers, an answer might have been
    // revoked: it is asked again once, then cached again.
    for n in 0..20_000 {
        let payload = format!(r#"{{"session_id":"later-session-{n}"}}"#);
        client.apply_event(auth_contract::events::SESSION_TERMINATED, &payload);
    }
    assert!(client.cached_allowed(presented, None, None).await.is_none(), "kept past what is remembered");
    client.validate(&user.access, None, None).await.expect("valid");
    client.validate(&user.access, None, None).await.expect("valid");
    assert_eq!(client.rpc_count(), calls + 1, "asked again once");
}

crate::on_both_backends!(
    unrelated_revocations_leave_cached_answers_alone,
    check_contexts_batches_and_sees_past_the_cache,
    an_operators_role_change_is_audited_and_announced,
    disable_and_role_change_reach_the_cache,
    an_answer_in_flight_during_its_revocation_is_not_cached,
    origin_keys_only_the_kinds_whose_decision_uses_it,
    cache_and_coalescing,
    revocation_reaches_the_cache,
    outage_fails_closed_and_recovers,
    service_token_is_renewed
);
