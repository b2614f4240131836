//! End-to-end identity flows over HTTP: signup, login, refresh rotation and reuse detection,
//! logout, sessions on several devices, eviction, idle timeout, password change, limits.

use reqwest::StatusCode;
use serde_json::{Value, json};
use time::Duration;

use crate::helpers::{
    Backend, FIREFOX, PASSWORD, SAFARI, TestApp, body, expect_problem, expect_status, hash_count, next_event,
    spawn_app, spawn_app_with, unique_email,
};

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.get_auth("/me", token).await
}

/// signup → login → me → refresh → refresh with the spent token (session ended, event on
/// the bus) → the session's tokens refused.
async fn signup_login_refresh_and_reuse_detection(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut events = app.events().await;
    let email = unique_email("flow");
    let signed_up = app.signup(&email).await;
    next_event(&mut events, "auth:user.registered", |e| e["user_id"] == json!(signed_up.user_id)).await;

    let first = app.login(&email, FIREFOX).await;
    next_event(&mut events, "auth:user.login", |e| e["session_id"] == json!(first.session_id)).await;
    let me_body = expect_status(me(&app, &first.access).await, StatusCode::OK).await;
    assert_eq!(me_body["email"], json!(email));
    assert_eq!(me_body["role"], json!("member"));
    assert!(me_body.get("password_hash").is_none());

    let second = app.refreshed(&first.refresh).await;
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(second.session_id, first.session_id);
    expect_status(me(&app, &second.access).await, StatusCode::OK).await;

    // Past the reuse grace, the spent token ends the whole session.
    app.clock.advance(Duration::seconds(11));
    expect_problem(app.refresh(&first.refresh).await, 401, "refresh_invalid").await;
    let ended =
        next_event(&mut events, "auth:session.terminated", |e| e["session_id"] == json!(first.session_id)).await;
    assert_eq!(ended["reason"], json!("refresh_reuse"));
    assert_eq!(ended["user_id"], json!(first.user_id));
    expect_problem(me(&app, &second.access).await, 401, "session_ended").await;
    expect_problem(app.refresh(&second.refresh).await, 401, "refresh_invalid").await;
    // The signup session is untouched.
    expect_status(me(&app, &signed_up.access).await, StatusCode::OK).await;
}

/// A client racing itself within the grace period gets 409 and keeps its session.
async fn spent_token_within_grace_conflicts(backend: Backend) {
    let app = spawn_app(backend).await;
    let tokens = app.signup(&unique_email("grace")).await;
    let next = app.refreshed(&tokens.refresh).await;
    app.clock.advance(Duration::seconds(5));
    expect_problem(app.refresh(&tokens.refresh).await, 409, "refresh_conflict").await;
    expect_status(me(&app, &next.access).await, StatusCode::OK).await;
    app.refreshed(&next.refresh).await;
}

/// Of concurrent refreshes with one token exactly one succeeds.
async fn concurrent_refreshes_exactly_one_wins(backend: Backend) {
    let app = spawn_app(backend).await;
    let tokens = app.signup(&unique_email("race")).await;
    let attempts = (0..6).map(|_| app.refresh(&tokens.refresh));
    let responses = futures::future::join_all(attempts).await;
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 409, 409, 409, 409, 409]);
}

/// Logout ends the session: the access token and the refresh token are refused, the cookie
/// is cleared and the event is published.
async fn logout_refuses_the_session_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut events = app.events().await;
    let tokens = app.signup(&unique_email("logout")).await;
    let response = app.post_auth("/logout", &tokens.access, None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let cookie = response.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(cookie.starts_with("pc_refresh=;") && cookie.contains("Max-Age=0"), "{cookie}");
    next_event(&mut events, "auth:user.logout", |e| e["session_id"] == json!(tokens.session_id)).await;
    let refused = expect_problem(me(&app, &tokens.access).await, 401, "token_revoked").await;
    assert!(refused["detail"].is_string());
    expect_problem(app.refresh(&tokens.refresh).await, 401, "refresh_invalid").await;
}

/// Sessions on two devices: listed with the current one marked; ending the other device's
/// session refuses its token; nobody can end someone else's session.
async fn sessions_listing_and_ending_another_device(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut events = app.events().await;
    let email = unique_email("devices");
    app.signup(&email).await;
    let laptop = app.login(&email, FIREFOX).await;
    let phone = app.login(&email, SAFARI).await;

    let listed = expect_status(app.get_auth("/sessions", &laptop.access).await, StatusCode::OK).await;
    let sessions = listed["sessions"].as_array().expect("sessions array");
    assert_eq!(sessions.len(), 3);
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == json!(true)).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], json!(laptop.session_id));
    let phone_view = sessions.iter().find(|s| s["id"] == json!(phone.session_id)).expect("phone listed");
    assert!(phone_view["device"].as_str().unwrap_or_default().contains("Safari"), "{phone_view}");
    assert_eq!(phone_view["ip"], json!("127.0.0.1"));

    let current_view = expect_status(app.get_auth("/session", &laptop.access).await, StatusCode::OK).await;
    assert_eq!(current_view["id"], json!(laptop.session_id));
    assert!(current_view["idle_seconds_left"].as_i64().unwrap_or_default() > 1700);

    // Someone else cannot end it, and learns nothing: 404.
    let stranger = app.signup(&unique_email("stranger")).await;
    let path = format!("/sessions/{}", phone.session_id);
    expect_problem(app.delete_auth(&path, &stranger.access).await, 404, "not_found").await;
    expect_status(me(&app, &phone.access).await, StatusCode::OK).await;

    assert_eq!(app.delete_auth(&path, &laptop.access).await.status(), StatusCode::NO_CONTENT);
    next_event(&mut events, "auth:session.deleted", |e| e["session_id"] == json!(phone.session_id)).await;
    expect_problem(me(&app, &phone.access).await, 401, "session_ended").await;
    expect_problem(app.delete_auth(&path, &laptop.access).await, 404, "not_found").await;

    // Ending all the others keeps only the current one.
    let ended = expect_status(app.delete_auth("/sessions", &laptop.access).await, StatusCode::OK).await;
    assert_eq!(ended["ended"], json!(1));
    next_event(&mut events, "auth:sessions.bulk_terminated", |e| e["user_id"] == json!(laptop.user_id)).await;
    let listed = expect_status(app.get_auth("/sessions", &laptop.access).await, StatusCode::OK).await;
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(1));
}

/// At most `MAX_SESSIONS_PER_USER` live at once: the oldest is ended.
async fn max_sessions_evicts_the_oldest(backend: Backend) {
    let app = spawn_app_with(backend, &[("MAX_SESSIONS_PER_USER", "2")]).await;
    let mut events = app.events().await;
    let email = unique_email("evict");
    // The manual clock stands still unless moved: give each session its own creation time.
    let oldest = app.signup(&email).await;
    app.clock.advance(Duration::seconds(1));
    let middle = app.login(&email, FIREFOX).await;
    app.clock.advance(Duration::seconds(1));
    let newest = app.login(&email, SAFARI).await;
    let evicted =
        next_event(&mut events, "auth:session.terminated", |e| e["session_id"] == json!(oldest.session_id)).await;
    assert_eq!(evicted["reason"], json!("max_sessions"));
    expect_problem(me(&app, &oldest.access).await, 401, "session_ended").await;
    expect_problem(app.refresh(&oldest.refresh).await, 401, "refresh_invalid").await;
    expect_status(me(&app, &middle.access).await, StatusCode::OK).await;
    let listed = expect_status(app.get_auth("/sessions", &newest.access).await, StatusCode::OK).await;
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(2));
}

/// A session idle past `SESSION_TIMEOUT_MINUTES` is dead; activity resets the timer.
async fn idle_timeout_with_injected_clock(backend: Backend) {
    let app = spawn_app_with(backend, &[("JWT_EXPIRES_IN", "3h"), ("SESSION_TIMEOUT_MINUTES", "30")]).await;
    let mut events = app.events().await;
    let tokens = app.signup(&unique_email("idle")).await;
    app.clock.advance(Duration::minutes(20));
    let view = expect_status(app.post_auth("/activity", &tokens.access, None).await, StatusCode::OK).await;
    assert_eq!(view["idle_seconds_left"], json!(1800));
    app.clock.advance(Duration::minutes(20));
    // Forty minutes after login, but only twenty after the last activity.
    expect_status(me(&app, &tokens.access).await, StatusCode::OK).await;
    app.clock.advance(Duration::minutes(31));
    expect_problem(me(&app, &tokens.access).await, 401, "session_idle").await;
    let ended =
        next_event(&mut events, "auth:session.terminated", |e| e["session_id"] == json!(tokens.session_id)).await;
    assert_eq!(ended["reason"], json!("idle"));
    expect_problem(me(&app, &tokens.access).await, 401, "session_ended").await;
    expect_problem(app.refresh(&tokens.refresh).await, 401, "refresh_invalid").await;
}

/// Validations count as activity, written at most once a minute.
async fn validation_counts_as_activity(backend: Backend) {
    let app = spawn_app_with(backend, &[("JWT_EXPIRES_IN", "3h"), ("SESSION_TIMEOUT_MINUTES", "30")]).await;
    let tokens = app.signup(&unique_email("active")).await;
    for _ in 0..4 {
        app.clock.advance(Duration::minutes(25));
        expect_status(me(&app, &tokens.access).await, StatusCode::OK).await;
    }
}

/// A password change ends every other session; the current one and its refresh token stay.
async fn password_change_ends_other_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut events = app.events().await;
    let email = unique_email("password");
    let here = app.signup(&email).await;
    let elsewhere = app.login(&email, SAFARI).await;
    let new_password = "a completely different passphrase 7";

    let wrong = json!({"current_password": "not my password at all", "new_password": new_password});
    expect_problem(app.post_auth("/password", &here.access, Some(&wrong)).await, 401, "invalid_credentials").await;
    let weak = json!({"current_password": PASSWORD, "new_password": "password1"});
    expect_problem(app.post_auth("/password", &here.access, Some(&weak)).await, 422, "validation_failed").await;

    let change = json!({"current_password": PASSWORD, "new_password": new_password});
    let response = app.post_auth("/password", &here.access, Some(&change)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT, "{}", body(response).await);
    let event = next_event(&mut events, "auth:user.password_changed", |e| e["user_id"] == json!(here.user_id)).await;
    assert_eq!(event["session_ids"], json!([elsewhere.session_id]));

    expect_problem(me(&app, &elsewhere.access).await, 401, "session_ended").await;
    expect_problem(app.refresh(&elsewhere.refresh).await, 401, "refresh_invalid").await;
    expect_status(me(&app, &here.access).await, StatusCode::OK).await;
    app.refreshed(&here.refresh).await;
    expect_problem(app.login_as(&email, PASSWORD, FIREFOX).await, 401, "invalid_credentials").await;
    expect_status(app.login_as(&email, new_password, FIREFOX).await, StatusCode::OK).await;
}

/// Ten failures per (account, IP) in 15 minutes: the eleventh attempt is refused with 429
/// before any password work, even with the right password.
async fn failed_logins_are_rate_limited(backend: Backend) {
    let app = spawn_app(backend).await;
    let email = unique_email("limits");
    app.signup(&email).await;
    for _ in 0..10 {
        expect_problem(app.login_as(&email, "wrong password here", FIREFOX).await, 401, "invalid_credentials").await;
    }
    let response = app.login_as(&email, PASSWORD, FIREFOX).await;
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After on 429");
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    expect_problem(response, 429, "rate_limited").await;
    // Another account from the same IP is not affected.
    let other = unique_email("limits-other");
    app.signup(&other).await;
    app.login(&other, FIREFOX).await;
}

/// An unknown email costs one Argon2id verification, like a known one (no timing oracle).
async fn unknown_email_costs_a_full_verification(backend: Backend) {
    let app = spawn_app(backend).await;
    let email = unique_email("known");
    app.signup(&email).await;
    let before = hash_count(&app.service.render_metrics().await);
    expect_problem(app.login_as(&email, "wrong password here", FIREFOX).await, 401, "invalid_credentials").await;
    let after_known = hash_count(&app.service.render_metrics().await);
    expect_problem(
        app.login_as(&unique_email("ghost"), "wrong password here", FIREFOX).await,
        401,
        "invalid_credentials",
    )
    .await;
    let after_unknown = hash_count(&app.service.render_metrics().await);
    assert_eq!(after_known - before, 1);
    assert_eq!(after_unknown - after_known, 1);
}

/// The audit log shows the caller's own security events, newest first, paginated.
async fn audit_log_pages_newest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let email = unique_email("audit");
    app.signup(&email).await;
    expect_problem(app.login_as(&email, "wrong password here", FIREFOX).await, 401, "invalid_credentials").await;
    let tokens = app.login(&email, FIREFOX).await;
    let page = expect_status(app.get_auth("/audit?limit=2", &tokens.access).await, StatusCode::OK).await;
    let entries = page["entries"].as_array().expect("entries");
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap_or_default(), e["outcome"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(actions, vec![("login", "success"), ("login", "failure")]);
    assert_eq!(entries[0]["ip"], json!("127.0.0.1"));
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let next =
        expect_status(app.get_auth(&format!("/audit?limit=2&cursor={cursor}"), &tokens.access).await, StatusCode::OK)
            .await;
    let rest: Vec<&str> =
        next["entries"].as_array().expect("entries").iter().map(|e| e["action"].as_str().unwrap_or_default()).collect();
    assert_eq!(rest, vec!["signup"]);
    assert!(next["next_cursor"].is_null());
    // Another user sees none of it.
    let other = app.signup(&unique_email("audit-other")).await;
    let theirs = expect_status(app.get_auth("/audit", &other.access).await, StatusCode::OK).await;
    assert_eq!(theirs["entries"].as_array().map(Vec::len), Some(1));
}

/// The refresh token travels in an HttpOnly cookie too, and refresh accepts it from there.
async fn refresh_cookie_round_trip(backend: Backend) {
    let app = spawn_app(backend).await;
    let email = unique_email("cookie");
    app.signup(&email).await;
    let response = app.login_as(&email, PASSWORD, FIREFOX).await;
    let cookie = response.headers().get("set-cookie").and_then(|v| v.to_str().ok()).expect("set-cookie").to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let pair = cookie.split(';').next().expect("cookie pair").to_owned();
    let refreshed = app.http.post(app.url("/refresh")).header("cookie", pair).send().await.expect("request");
    let refreshed = expect_status(refreshed, StatusCode::OK).await;
    assert!(refreshed["refresh_token"].as_str().is_some_and(|t| t.starts_with("pcr_")));
}

/// Operational endpoints: health, readiness, metrics names, the OpenAPI document.
async fn operational_endpoints(backend: Backend) {
    let app = spawn_app(backend).await;
    app.signup(&unique_email("ops")).await;
    let get = |path: &str| app.http.get(format!("{}{path}", app.root)).send();
    expect_status(get("/health").await.expect("health"), StatusCode::OK).await;
    expect_status(get("/ready").await.expect("ready"), StatusCode::OK).await;
    let metrics = get("/metrics").await.expect("metrics").text().await.expect("text");
    for name in [
        "auth_operations_total{operation=\"signup\",status=\"success\"} 1",
        "auth_tokens_generated_total{type=\"access\"}",
        "auth_password_hash_duration_seconds_count",
        "auth_active_sessions 1",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}");
    }
    let doc = expect_status(get("/openapi.json").await.expect("openapi"), StatusCode::OK).await;
    assert_eq!(doc["openapi"], json!("3.1.0"));
    for path in [
        "/api/v1/auth/config",
        "/api/v1/auth/signup",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/auth/me",
        "/api/v1/auth/password",
        "/api/v1/auth/session",
        "/api/v1/auth/sessions",
        "/api/v1/auth/sessions/{id}",
        "/api/v1/auth/activity",
        "/api/v1/auth/audit",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
    let config = expect_status(app.http.get(app.url("/config")).send().await.expect("config"), StatusCode::OK).await;
    assert_eq!(config["session_timeout_minutes"], json!(30));
    assert_eq!(config["access_token_expires_in"], json!(900));
    assert_eq!(config["password"]["max_length"], json!(256));
    let request_id =
        app.http.get(app.url("/config")).header("x-request-id", "trace-me-123").send().await.expect("config");
    assert_eq!(request_id.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some("trace-me-123"));
    // SPEC §6's one rule: an id outside `[A-Za-z0-9._:-]{1,128}` is replaced by a UUIDv4.
    for bad in ["a/b", "a b", &"x".repeat(129)] {
        let replaced = app.http.get(app.url("/config")).header("x-request-id", bad).send().await.expect("config");
        let echoed = replaced.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(uuid::Uuid::parse_str(echoed).is_ok(), "{bad:?} came back as {echoed:?}");
    }
}

crate::on_both_backends!(
    signup_login_refresh_and_reuse_detection,
    spent_token_within_grace_conflicts,
    concurrent_refreshes_exactly_one_wins,
    logout_refuses_the_session_tokens,
    sessions_listing_and_ending_another_device,
    max_sessions_evicts_the_oldest,
    idle_timeout_with_injected_clock,
    validation_counts_as_activity,
    password_change_ends_other_sessions,
    failed_logins_are_rate_limited,
    unknown_email_costs_a_full_verification,
    audit_log_pages_newest_first,
    refresh_cookie_round_trip,
    operational_endpoints,
);
