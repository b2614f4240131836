//! Login limits are reservations and the password hash is a bounded, uncancellable piece of
//! work (SPEC §4): concurrent wrong passwords cannot get more guesses than the limit, and
//! clients that hang up mid-hash cannot make the service run more hashes than it allows.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::helpers::*;

async fn login_from(app: &TestApp, ip: &str, email: &str, password: &str) -> reqwest::Response {
    app.http
        .post(app.url("/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("request")
}

/// 50 concurrent wrong passwords for one account from one IP: exactly 10 are verified (the
/// hasher's own count) and answered 401, 40 are refused with 429 and `Retry-After` before any
/// work; the same account from another IP is still verified.
async fn concurrent_wrong_passwords_get_exactly_the_limit(backend: Backend) {
    let app = spawn_app_with(backend, &[("TRUSTED_PROXIES", "127.0.0.1/32"), ("PASSWORD_HASH_QUEUE", "64")]).await;
    let email = unique_email("storm");
    app.signup(&email).await;
    let before = hash_count(&app.service.render_metrics().await);
    let attempts = (0..50).map(|_| login_from(&app, "203.0.113.7", &email, "wrong password here"));
    let responses = futures::future::join_all(attempts).await;
    let (mut unauthorized, mut limited) = (0, 0);
    for response in responses {
        match response.status() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(response.headers().contains_key("retry-after"), "429 without Retry-After");
                expect_problem(response, 429, "rate_limited").await;
                limited += 1;
            }
            other => panic!("unexpected {other}: {}", body(response).await),
        }
    }
    assert_eq!((unauthorized, limited), (10, 40));
    assert_eq!(hash_count(&app.service.render_metrics().await) - before, 10, "verified hashes");
    let other_ip = login_from(&app, "203.0.113.8", &email, "wrong password here").await;
    expect_problem(other_ip, 401, "invalid_credentials").await;
    assert_eq!(hash_count(&app.service.render_metrics().await) - before, 11);
}

/// A refused attempt consumes nothing and a success refunds: after nine failures and a
/// success, ten more failures are verified before the pair is limited.
async fn a_success_refunds_and_refusals_consume_nothing(backend: Backend) {
    let app = spawn_app_with(backend, &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let email = unique_email("refund");
    app.signup(&email).await;
    for _ in 0..9 {
        expect_problem(
            login_from(&app, "203.0.113.9", &email, "wrong password here").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    expect_status(login_from(&app, "203.0.113.9", &email, PASSWORD).await, StatusCode::OK).await;
    for _ in 0..10 {
        expect_problem(
            login_from(&app, "203.0.113.9", &email, "wrong password here").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    for _ in 0..3 {
        expect_problem(login_from(&app, "203.0.113.9", &email, PASSWORD).await, 429, "rate_limited").await;
    }
}

/// `/password` takes the same reservation: concurrent wrong current passwords get exactly
/// the pair's ten verifications.
async fn concurrent_password_changes_get_exactly_the_limit(backend: Backend) {
    let app = spawn_app_with(backend, &[("PASSWORD_HASH_QUEUE", "64")]).await;
    let email = unique_email("pw-storm");
    let user = app.signup(&email).await;
    let before = hash_count(&app.service.render_metrics().await);
    let change = json!({"current_password": "wrong password here", "new_password": "a brand new passphrase 7"});
    let attempts = (0..30).map(|_| app.post_auth("/password", &user.access, Some(&change)));
    let statuses: Vec<u16> = futures::future::join_all(attempts).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 20, "{statuses:?}");
    assert_eq!(hash_count(&app.service.render_metrics().await) - before, 10);
}

fn raw_login(addr: std::net::SocketAddr, email: &str) -> impl std::future::Future<Output = tokio::net::TcpStream> {
    let body = json!({"email": email, "password": "wrong password here"}).to_string();
    async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        stream
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Clients that close while their hash runs: the hash keeps its permit to the end, so the
/// number running at once (measured inside the hashing closure) never exceeds
/// `PASSWORD_HASH_CONCURRENCY`; a full queue answers 503 with `Retry-After`; afterwards a
/// normal login works.
async fn hangups_mid_hash_cannot_exceed_the_hash_concurrency(backend: Backend) {
    let app = spawn_app_with(backend, &[("PASSWORD_HASH_CONCURRENCY", "1"), ("PASSWORD_HASH_QUEUE", "2")]).await;
    let email = unique_email("hangup");
    app.signup(&email).await;
    let stats = app.service.password_hashes();
    let started = stats.started();
    for round in started..started + 12 {
        // Each client hangs up once a hash is running, so the next one finds a free request slot.
        let stream = raw_login(app.http_addr, &unique_email(&format!("ghost{round}"))).await;
        until("this client's hash to start", || stats.started() > round).await;
        drop(stream);
    }
    assert_eq!(stats.peak(), 1, "hashes ran at once beyond PASSWORD_HASH_CONCURRENCY");

    // Queue full: one running and two waiting, so among many concurrent logins some get 503.
    let attempts = (0..12).map(|i| {
        let app = &app;
        async move { app.login_as(&unique_email(&format!("queue{i}")), "wrong password here", FIREFOX).await }
    });
    let responses = futures::future::join_all(attempts).await;
    let mut unavailable = 0;
    for response in responses {
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert!(response.headers().contains_key("retry-after"), "503 without Retry-After");
            expect_problem(response, 503, "unavailable").await;
            unavailable += 1;
        } else {
            expect_problem(response, 401, "invalid_credentials").await;
        }
    }
    assert!(unavailable >= 1, "a full hash queue must answer 503");
    assert_eq!(stats.peak(), 1);
    until("the queue to drain", || stats.running() == 0).await;
    app.login(&email, FIREFOX).await;
}

/// Several `X-Forwarded-For` lines are one list (RFC 9110 §5.3): from a trusted proxy, the
/// client is the right-most untrusted address across all of them, never the first line's.
async fn every_forwarded_for_line_is_read(backend: Backend) {
    let app = spawn_app_with(backend, &[("TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8")]).await;
    let email = unique_email("xff");
    app.signup(&email).await;
    let response = app
        .http
        .post(app.url("/login"))
        .header("x-forwarded-for", "198.51.100.1")
        .header("x-forwarded-for", "203.0.113.50, 10.0.0.7")
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("request");
    let session = expect_status(response, StatusCode::OK).await["session"].clone();
    assert_eq!(session["ip"], "203.0.113.50", "{session}");
}

/// A user context is cached no longer than its session lives: near the session's absolute end
/// the auth service grants a TTL that ends with it, not the usual minute.
async fn cache_ttl_ends_with_the_session(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("SESSION_LIFETIME_HOURS", "1"), ("JWT_EXPIRES_IN", "2h"), ("SESSION_TIMEOUT_MINUTES", "180")],
    )
    .await;
    let user = app.signup(&unique_email("ttl")).await;
    app.clock.advance(time::Duration::seconds(3600 - 20));
    let validated = app.service.validate(&user.access, None, None).await.expect("still valid");
    assert!(validated.cache_ttl <= 20, "cached for {} s past the session's end", validated.cache_ttl);
}

/// `TENANT_RATE_LIMIT_MAX` caps what a client may set as its own limit: a larger rate is 422.
async fn a_tenant_limit_above_the_maximum_is_refused(backend: Backend) {
    let app = spawn_app_with(backend, &[("TENANT_RATE_LIMIT_MAX", "100/minute")]).await;
    let owner = app.signup(&unique_email("tenant-max")).await;
    let shop = app.register_client(&owner, json!({"name": "Shop"})).await;
    let path = format!("/client/{}/rate-limit", shop.id);
    for too_much in [json!({"requests": 1000, "per": "1m"}), json!({"requests": 2, "per": "1s"})] {
        let response = app.put_auth(&path, &owner.access, &too_much).await;
        expect_problem(response, 422, "validation_failed").await;
    }
    for fine in [json!({"requests": 100, "per": "1m"}), json!({"requests": 1, "per": "1s"})] {
        expect_status(app.put_auth(&path, &owner.access, &fine).await, StatusCode::OK).await;
    }
}

/// Embedded mode keeps its secrets and database to its user: `DATA_DIR` is 0700 and the
/// SQLite file (whose WAL and shared-memory files take its mode) 0600.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().expect("tempdir");
    let data_dir = parent.path().join("data");
    let data = data_dir.to_string_lossy().into_owned();
    let app = spawn_app_with(Backend::Sqlite, &[("DATA_DIR", data.as_str())]).await;
    let mode = |path: &std::path::Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700, "DATA_DIR");
    assert_eq!(mode(&data_dir.join(auth_service::SQLITE_FILE)), 0o600, "the database");
    for secret in std::fs::read_dir(&data_dir).expect("list") {
        let path = secret.expect("entry").path();
        assert_eq!(mode(&path) & 0o077, 0, "{} is readable by others", path.display());
    }
    drop(app);
}

/// `MAX_SESSIONS_PER_USER` holds under concurrent logins: however many log in at once, at
/// most that many sessions are live afterwards.
async fn max_sessions_hold_under_concurrent_logins(backend: Backend) {
    let app = spawn_app_with(backend, &[("MAX_SESSIONS_PER_USER", "3"), ("PASSWORD_HASH_QUEUE", "64")]).await;
    let email = unique_email("many-devices");
    app.signup(&email).await;
    // Fewer than the pair's 10 reservations, so every login is let through to its hash.
    let logins = (0..8).map(|_| app.login_as(&email, PASSWORD, FIREFOX));
    let mut last = None;
    for response in futures::future::join_all(logins).await {
        last = Some(expect_status(response, StatusCode::OK).await);
    }
    let access = last.expect("a login")["access_token"].as_str().expect("token").to_owned();
    // Any still-live session lists them all; count the live ones in the store directly.
    let store = app.raw.store();
    let user = store.user_by_email(&email).await.expect("store").expect("user");
    let now = app.service.now();
    let live = store.live_sessions(user.id, now, now - time::Duration::hours(1)).await.expect("store");
    assert!(live.len() <= 3, "{} live sessions, at most 3 allowed", live.len());
    drop(access);
}

/// `AUTH_FAILURE_LIMIT` on the auth service's own HTTP routes: bogus Bearer tokens from one IP
/// get 429 once the limit is spent, before they are looked at; valid ones give theirs back.
async fn bogus_bearers_are_limited_before_validation(backend: Backend) {
    let app = spawn_app_with(backend, &[("AUTH_FAILURE_LIMIT", "3/minute")]).await;
    let user = app.signup(&unique_email("bearer-flood")).await;
    for _ in 0..6 {
        expect_status(app.get_auth("/me", &user.access).await, StatusCode::OK).await;
    }
    for i in 0..3 {
        expect_problem(app.get_auth("/me", &format!("bogus-{i}")).await, 401, "token_invalid").await;
    }
    let refused = app.get_auth("/me", "bogus-3").await;
    assert!(refused.headers().contains_key("retry-after"));
    expect_problem(refused, 429, "rate_limited").await;
}

/// A revoked `jti` is kept as long as its token could still be accepted: until `exp` plus
/// the validation leeway, so cleanup cannot forget it while the token still verifies.
async fn revoked_jtis_outlive_the_leeway(backend: Backend) {
    use base64::Engine as _;
    let app = spawn_app(backend).await;
    let user = app.signup(&unique_email("jti")).await;
    let payload = user.access.split('.').nth(1).expect("payload");
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64"))
            .expect("claims");
    let (jti, exp) = (claims["jti"].as_str().expect("jti").to_owned(), claims["exp"].as_i64().expect("exp"));
    assert_eq!(app.post_auth("/logout", &user.access, None).await.status(), StatusCode::NO_CONTENT);
    let now = app.service.now().unix_timestamp();
    // Past `exp`, within the leeway: the token would still verify, so its revocation must stay.
    app.clock.advance(time::Duration::seconds(exp - now + 10));
    app.service.cleanup(false).await.expect("cleanup");
    assert!(app.raw.store().is_jti_revoked(&jti).await.expect("store"), "revocation forgotten within the leeway");
    app.clock.advance(time::Duration::seconds(60));
    app.service.cleanup(false).await.expect("cleanup");
    assert!(!app.raw.store().is_jti_revoked(&jti).await.expect("store"), "kept past exp + leeway");
}

crate::on_both_backends!(
    concurrent_wrong_passwords_get_exactly_the_limit,
    a_success_refunds_and_refusals_consume_nothing,
    concurrent_password_changes_get_exactly_the_limit,
    hangups_mid_hash_cannot_exceed_the_hash_concurrency,
    every_forwarded_for_line_is_read,
    cache_ttl_ends_with_the_session,
    a_tenant_limit_above_the_maximum_is_refused,
    max_sessions_hold_under_concurrent_logins,
    bogus_bearers_are_limited_before_validation,
    revoked_jtis_outlive_the_leeway,
);
