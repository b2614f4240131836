//! Credentials end to end: personal access tokens, clients and API keys (rotation with a
//! grace period, revocation), IP and origin allowlists, SDK sessions, object-level
//! authorization, admin routes and disabled users; and that no raw PAT or API key is ever
//! stored or logged.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use auth_contract::Role;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use time::Duration;

use crate::helpers::{
    Backend, FIREFOX, PASSWORD, TestApp, Tokens, expect_problem, expect_status, next_event, spawn_app, spawn_app_with,
    unique_email,
};

/// A registered client: its id and first key.
struct Registered {
    id: String,
    key: String,
    key_id: String,
}

async fn register(app: &TestApp, owner: &Tokens, body: Value) -> Registered {
    let response = app.post_auth("/client/register", &owner.access, Some(&body)).await;
    let created = expect_status(response, StatusCode::CREATED).await;
    let key = created["api_key"]["key"].as_str().expect("key shown once").to_owned();
    assert!(key.starts_with("pck_") && key.len() == 40, "{key}");
    Registered {
        id: created["client"]["id"].as_str().expect("id").to_owned(),
        key,
        key_id: created["api_key"]["id"].as_str().expect("key id").to_owned(),
    }
}

async fn sdk_session(app: &TestApp, key: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = app.http.post(app.url("/sdk/session")).header("x-api-key", key);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.json(&json!({"external_user_id": "customer-42"})).send().await.expect("request")
}

async fn put_auth(app: &TestApp, path: &str, token: &str, body: &Value) -> Response {
    app.http.put(app.url(path)).bearer_auth(token).json(body).send().await.expect("request")
}

/// PAT create → use on /me → listed without its secret → revoked → refused.
async fn pat_lifecycle(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut events = app.events().await;
    let user = app.signup(&unique_email("pat")).await;
    let body = json!({"name": "ci script", "scopes": ["repos:read", "repos:read"]});
    let created = expect_status(app.post_auth("/tokens", &user.access, Some(&body)).await, StatusCode::CREATED).await;
    let token = created["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("pcp_") && token.len() == 40, "{token}");
    assert_eq!(created["scopes"], json!(["repos:read"]));
    assert!(created["expires_at"].is_null());

    let me = expect_status(app.get_auth("/me", &token).await, StatusCode::OK).await;
    assert_eq!(me["id"], json!(user.user_id));

    let listed = expect_status(app.get_auth("/tokens", &user.access).await, StatusCode::OK).await;
    let entry = &listed["tokens"][0];
    assert_eq!(entry["prefix"], json!(&token[..8]));
    assert_eq!(entry["last_four"], json!(&token[token.len() - 4..]));
    assert!(entry.get("token").is_none());
    assert!(!listed.to_string().contains(&token[8..token.len() - 4]), "the secret leaked into the listing");
    assert!(entry["last_used_at"].is_string(), "last_used_at was not recorded: {entry}");

    // A PAT cannot manage tokens or sessions: those routes take access tokens only.
    expect_problem(app.post_auth("/tokens", &token, Some(&body)).await, 401, "token_invalid").await;

    let id = created["id"].as_str().expect("id");
    assert_eq!(app.delete_auth(&format!("/tokens/{id}"), &user.access).await.status(), StatusCode::NO_CONTENT);
    let revoked = next_event(&mut events, "auth:token.revoked", |e| e["credential_id"] == json!(id)).await;
    assert_eq!(revoked["user_id"], json!(user.user_id));
    expect_problem(app.get_auth("/me", &token).await, 401, "token_revoked").await;
    expect_problem(app.delete_auth(&format!("/tokens/{id}"), &user.access).await, 404, "not_found").await;
    let listed = expect_status(app.get_auth("/tokens", &user.access).await, StatusCode::OK).await;
    assert_eq!(listed["tokens"], json!([]));

    let audit = expect_status(app.get_auth("/audit?limit=5", &user.access).await, StatusCode::OK).await;
    let actions: Vec<&str> =
        audit["entries"].as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(&actions[..2], &["pat_revoked", "pat_created"]);
}

/// An expired PAT is refused; limits are reported and enforced.
async fn pat_expiry_and_limits(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("PAT_MAX_PER_USER", "2"), ("JWT_EXPIRES_IN", "30d"), ("SESSION_TIMEOUT_MINUTES", "100000")],
    )
    .await;
    let user = app.signup(&unique_email("patexp")).await;
    let body = json!({"name": "short-lived", "expires_in_days": 1});
    let created = expect_status(app.post_auth("/tokens", &user.access, Some(&body)).await, StatusCode::CREATED).await;
    let token = created["token"].as_str().expect("token").to_owned();
    expect_status(app.get_auth("/me", &token).await, StatusCode::OK).await;
    app.post_auth("/tokens", &user.access, Some(&json!({"name": "second"}))).await;
    let limits = expect_status(app.get_auth("/tokens/limits", &user.access).await, StatusCode::OK).await;
    assert_eq!(
        (limits["max"].as_u64(), limits["used"].as_u64(), limits["remaining"].as_u64()),
        (Some(2), Some(2), Some(0))
    );
    expect_problem(app.post_auth("/tokens", &user.access, Some(&json!({"name": "third"}))).await, 403, "forbidden")
        .await;

    app.clock.advance(Duration::days(2));
    expect_problem(app.get_auth("/me", &token).await, 401, "token_expired").await;
    // The expired one no longer counts.
    let limits = expect_status(app.get_auth("/tokens/limits", &user.access).await, StatusCode::OK).await;
    assert_eq!(limits["used"].as_u64(), Some(1));
    expect_status(app.post_auth("/tokens", &user.access, Some(&json!({"name": "third"}))).await, StatusCode::CREATED)
        .await;
}

/// Client register → key opens SDK sessions → rotate: both keys work in the grace period,
/// only the new one after it → revoke: refused at once, SDK sessions of the key end.
async fn client_keys_rotation_and_revocation(backend: Backend) {
    // The owner's token and the SDK session must outlive the hour the clock moves.
    let app = spawn_app_with(backend, &[("JWT_EXPIRES_IN", "3h"), ("SESSION_TIMEOUT_MINUTES", "600")]).await;
    let mut events = app.events().await;
    let owner = app.signup(&unique_email("owner")).await;
    let client = register(&app, &owner, json!({"name": "Acme shop"})).await;

    let sdk = expect_status(sdk_session(&app, &client.key, &[]).await, StatusCode::CREATED).await;
    assert_eq!(sdk["token_type"], json!("Bearer"));
    let sdk_refresh = sdk["refresh_token"].as_str().expect("refresh").to_owned();
    let sdk_claims = claims(sdk["access_token"].as_str().expect("access"));
    assert_eq!(sdk_claims["typ"], json!("sdk"));
    assert_eq!(sdk_claims["sub"], json!(format!("sdk:{}:customer-42", client.id)));
    assert_eq!(sdk_claims["tid"], json!(client.id));
    // The SDK refresh token rotates like a user's, answering in the SDK shape.
    let refreshed = expect_status(app.refresh(&sdk_refresh).await, StatusCode::OK).await;
    assert!(refreshed.get("user").is_none());
    let sdk_refresh = refreshed["refresh_token"].as_str().expect("refresh").to_owned();

    let rotate = format!("/client/{}/api-keys/{}/rotate", client.id, client.key_id);
    app.clock.advance(Duration::seconds(1));
    let rotated = expect_status(
        app.post_auth(&rotate, &owner.access, Some(&json!({"grace_period_seconds": 3600}))).await,
        StatusCode::CREATED,
    )
    .await;
    let new_key = rotated["api_key"]["key"].as_str().expect("new key").to_owned();
    let new_id = rotated["api_key"]["id"].as_str().expect("new id").to_owned();
    next_event(&mut events, "auth:api_key.rotated", |e| e["credential_id"] == json!(client.key_id)).await;
    expect_status(sdk_session(&app, &client.key, &[]).await, StatusCode::CREATED).await;
    expect_status(sdk_session(&app, &new_key, &[]).await, StatusCode::CREATED).await;
    expect_problem(app.post_auth(&rotate, &owner.access, None).await, 422, "validation_failed").await;

    let keys_path = format!("/client/{}/api-keys", client.id);
    let keys = expect_status(app.get_auth(&keys_path, &owner.access).await, StatusCode::OK).await;
    let statuses: Vec<&str> =
        keys["api_keys"].as_array().expect("keys").iter().filter_map(|k| k["status"].as_str()).collect();
    assert_eq!(statuses, vec!["rotating", "active"]);

    app.clock.advance(Duration::seconds(3601));
    expect_problem(sdk_session(&app, &client.key, &[]).await, 401, "key_revoked").await;
    expect_status(sdk_session(&app, &new_key, &[]).await, StatusCode::CREATED).await;

    let revoke = format!("/client/{}/api-keys/{new_id}", client.id);
    assert_eq!(app.delete_auth(&revoke, &owner.access).await.status(), StatusCode::NO_CONTENT);
    next_event(&mut events, "auth:api_key.revoked", |e| e["credential_id"] == json!(new_id)).await;
    expect_problem(sdk_session(&app, &new_key, &[]).await, 401, "key_revoked").await;
    // The first SDK session was opened with the old key, which expired but was not revoked:
    // it lives on. Sessions of the revoked key are over.
    expect_status(app.refresh(&sdk_refresh).await, StatusCode::OK).await;
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    let bytes = base64url(payload);
    serde_json::from_slice(&bytes).expect("claims JSON")
}

fn base64url(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let value = u32::try_from(ALPHABET.iter().position(|a| *a == c).expect("base64url")).expect("small");
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(u8::try_from((bits >> count) & 0xff).expect("byte"));
        }
    }
    out
}

/// IP allowlist and origins decide SDK sessions, from the client IP the service trusts.
async fn allowlists_decide_sdk_sessions(backend: Backend) {
    let app = spawn_app_with(backend, &[("TRUSTED_PROXIES", "127.0.0.1/32, ::1")]).await;
    let mut events = app.events().await;
    let owner = app.signup(&unique_email("allow")).await;
    let client = register(&app, &owner, json!({"name": "Allow", "ip_allowlist": ["203.0.113.0/24"]})).await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for (ip, status) in [
        ("203.0.113.9", 201),
        ("198.51.100.1", 403),
        ("::ffff:203.0.113.5", 201),
        ("2001:db8::1", 403),
        ("198.51.100.1, 203.0.113.9", 201),
    ] {
        let response = sdk_session(&app, &client.key, &from(ip)).await;
        assert_eq!(response.status().as_u16(), status, "{ip}");
        if status == 403 {
            expect_problem(response, 403, "ip_not_allowed").await;
        }
    }

    let origins = format!("/client/{}/origins", client.id);
    let set =
        json!({"allowed_origins": ["https://app.example.com", "https://*.example.org", "HTTPS://App.Example.com:443"]});
    let stored = expect_status(put_auth(&app, &origins, &owner.access, &set).await, StatusCode::OK).await;
    assert_eq!(stored["allowed_origins"], json!(["https://*.example.org", "https://app.example.com"]));
    next_event(&mut events, "auth:client.updated", |e| {
        e["client_id"] == json!(client.id) && e["field"] == json!("allowed_origins")
    })
    .await;
    let inside = "203.0.113.10";
    for (origin, status) in [
        (Some("https://app.example.com"), 201),
        (Some("https://a.example.org"), 201),
        (Some("https://example.org"), 403),
        (Some("https://app.example.com.evil.com"), 403),
        (Some("http://app.example.com"), 403),
        (Some("https://app.example.com:8443"), 403),
        (Some("null"), 403),
        (None, 201),
    ] {
        let mut headers = vec![("x-forwarded-for", inside)];
        if let Some(origin) = origin {
            headers.push(("origin", origin));
        }
        let response = sdk_session(&app, &client.key, &headers).await;
        assert_eq!(response.status().as_u16(), status, "{origin:?}");
        if status == 403 {
            expect_problem(response, 403, "origin_not_allowed").await;
        }
    }

    // Emptying the IP list allows any address again.
    let ips = format!("/client/{}/ip-allowlist", client.id);
    expect_status(put_auth(&app, &ips, &owner.access, &json!({"ip_allowlist": []})).await, StatusCode::OK).await;
    expect_status(sdk_session(&app, &client.key, &from("198.51.100.1")).await, StatusCode::CREATED).await;
    let shown = expect_status(app.get_auth(&ips, &owner.access).await, StatusCode::OK).await;
    assert_eq!(shown, json!({"ip_allowlist": []}));
}

/// The global switches turn the allowlists off.
async fn allowlist_switches(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("TRUSTED_PROXIES", "127.0.0.1"), ("IP_WHITELIST_ENABLED", "false"), ("ORIGIN_VALIDATION_ENABLED", "false")],
    )
    .await;
    let owner = app.signup(&unique_email("switch")).await;
    let client = register(&app, &owner, json!({"name": "Open", "ip_allowlist": ["10.0.0.0/8"]})).await;
    let headers = [("x-forwarded-for", "198.51.100.1"), ("origin", "https://anywhere.example")];
    expect_status(sdk_session(&app, &client.key, &headers).await, StatusCode::CREATED).await;
}

/// User B can neither see nor change user A's client, keys, PATs or sessions: 404, and
/// nothing changes. A member calling an admin route gets 403.
async fn object_level_authorization(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.signup(&unique_email("alice")).await;
    let bob = app.signup(&unique_email("bob")).await;
    let client = register(&app, &alice, json!({"name": "Alice's"})).await;
    let pat =
        expect_status(app.post_auth("/tokens", &alice.access, Some(&json!({"name": "a"}))).await, StatusCode::CREATED)
            .await;
    let pat_token = pat["token"].as_str().expect("token").to_owned();
    let pat_id = pat["id"].as_str().expect("id").to_owned();
    let c = &client.id;
    let k = &client.key_id;

    for response in [
        app.get_auth(&format!("/client/{c}"), &bob.access).await,
        app.get_auth(&format!("/client/{c}/api-keys"), &bob.access).await,
        app.post_auth(&format!("/client/{c}/api-keys"), &bob.access, Some(&json!({}))).await,
        app.post_auth(&format!("/client/{c}/api-keys/{k}/rotate"), &bob.access, None).await,
        app.delete_auth(&format!("/client/{c}/api-keys/{k}"), &bob.access).await,
        app.get_auth(&format!("/client/{c}/ip-allowlist"), &bob.access).await,
        put_auth(&app, &format!("/client/{c}/ip-allowlist"), &bob.access, &json!({"ip_allowlist": ["10.0.0.0/8"]}))
            .await,
        put_auth(
            &app,
            &format!("/client/{c}/origins"),
            &bob.access,
            &json!({"allowed_origins": ["https://bob.example"]}),
        )
        .await,
        put_auth(&app, &format!("/client/{c}/rate-limit"), &bob.access, &json!({"requests": 1, "per": "1m"})).await,
        app.delete_auth(&format!("/tokens/{pat_id}"), &bob.access).await,
        app.delete_auth(&format!("/sessions/{}", alice.session_id), &bob.access).await,
    ] {
        expect_problem(response, 404, "not_found").await;
    }
    let clients = expect_status(app.get_auth("/clients", &bob.access).await, StatusCode::OK).await;
    assert_eq!(clients["clients"], json!([]));

    // Nothing changed for Alice.
    expect_status(sdk_session(&app, &client.key, &[]).await, StatusCode::CREATED).await;
    expect_status(app.get_auth("/me", &pat_token).await, StatusCode::OK).await;
    expect_status(app.get_auth("/me", &alice.access).await, StatusCode::OK).await;
    let mine = expect_status(app.get_auth(&format!("/client/{c}"), &alice.access).await, StatusCode::OK).await;
    assert_eq!((mine["ip_allowlist"].clone(), mine["rate_limit"]["requests"].clone()), (json!([]), Value::Null));
    let keys = expect_status(app.get_auth(&format!("/client/{c}/api-keys"), &alice.access).await, StatusCode::OK).await;
    assert_eq!(keys["api_keys"].as_array().map(Vec::len), Some(1));

    for response in [
        app.get_auth("/admin/users", &bob.access).await,
        app.post_auth(&format!("/admin/users/{}/disable", alice.user_id), &bob.access, None).await,
        put_auth(&app, &format!("/admin/users/{}/role", bob.user_id), &bob.access, &json!({"role": "admin"})).await,
    ] {
        expect_problem(response, 403, "forbidden").await;
    }
}

/// A disabled user's access token, PAT, refresh token and client keys stop at once; login is
/// refused; enabling restores login.
async fn disabled_user_is_refused_everywhere(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut events = app.events().await;
    let admin_email = unique_email("admin");
    app.signup(&admin_email).await;
    let promoted = app.service.set_role_as_operator(&admin_email, Role::Admin).await.expect("promote");
    assert_eq!(promoted.role, Role::Admin);
    let admin = app.login(&admin_email, FIREFOX).await;

    let email = unique_email("target");
    app.clock.advance(Duration::seconds(1));
    let target = app.signup(&email).await;
    let pat =
        expect_status(app.post_auth("/tokens", &target.access, Some(&json!({"name": "x"}))).await, StatusCode::CREATED)
            .await;
    let pat = pat["token"].as_str().expect("token").to_owned();
    let client = register(&app, &target, json!({"name": "Target's"})).await;

    let listed = expect_status(app.get_auth("/admin/users?limit=1", &admin.access).await, StatusCode::OK).await;
    assert_eq!(listed["users"][0]["id"], json!(target.user_id));
    let cursor = listed["next_cursor"].as_str().expect("cursor");
    let rest = expect_status(
        app.get_auth(&format!("/admin/users?limit=100&cursor={cursor}"), &admin.access).await,
        StatusCode::OK,
    )
    .await;
    assert!(rest["users"].as_array().expect("users").iter().any(|u| u["email"] == json!(admin_email)));

    let disable = format!("/admin/users/{}/disable", target.user_id);
    assert_eq!(app.post_auth(&disable, &admin.access, None).await.status(), StatusCode::NO_CONTENT);
    let event = next_event(&mut events, "auth:user.disabled", |e| e["user_id"] == json!(target.user_id)).await;
    assert_eq!(event["session_ids"], json!([target.session_id]));
    let refused = app.get_auth("/me", &target.access).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    expect_problem(app.get_auth("/me", &pat).await, 401, "token_revoked").await;
    expect_problem(app.refresh(&target.refresh).await, 401, "refresh_invalid").await;
    expect_problem(app.login_as(&email, PASSWORD, FIREFOX).await, 403, "forbidden").await;
    expect_problem(sdk_session(&app, &client.key, &[]).await, 401, "key_revoked").await;

    let enable = format!("/admin/users/{}/enable", target.user_id);
    assert_eq!(app.post_auth(&enable, &admin.access, None).await.status(), StatusCode::NO_CONTENT);
    expect_status(app.login_as(&email, PASSWORD, FIREFOX).await, StatusCode::OK).await;

    let role = format!("/admin/users/{}/role", target.user_id);
    let changed =
        expect_status(put_auth(&app, &role, &admin.access, &json!({"role": "admin"})).await, StatusCode::OK).await;
    assert_eq!(changed["role"], json!("admin"));
    let again = app.login(&email, FIREFOX).await;
    expect_status(app.get_auth("/admin/users", &again.access).await, StatusCode::OK).await;
}

/// Rate limit settings round trip.
async fn tenant_rate_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.signup(&unique_email("rl")).await;
    let client = register(&app, &owner, json!({"name": "Limited"})).await;
    let path = format!("/client/{}/rate-limit", client.id);
    let set = expect_status(
        put_auth(&app, &path, &owner.access, &json!({"requests": 1000, "per": "60s"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(set, json!({"requests": 1000, "per": "1m"}));
    let got = expect_status(app.get_auth(&path, &owner.access).await, StatusCode::OK).await;
    assert_eq!(got, set);
    let cleared =
        expect_status(put_auth(&app, &path, &owner.access, &json!({"requests": null})).await, StatusCode::OK).await;
    assert_eq!(cleared, json!({"requests": null, "per": null}));
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line of this test binary from now on, at debug level.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buffer.clone());
        let _ = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .try_init();
        buffer
    })
    .clone()
}

/// No raw PAT, API key or SDK refresh token reaches the database or the logs.
async fn no_raw_credential_stored_or_logged(backend: Backend) {
    let logs = capture_logs();
    let app = spawn_app(backend).await;
    let owner = app.signup(&unique_email("leak")).await;
    let pat = expect_status(
        app.post_auth("/tokens", &owner.access, Some(&json!({"name": "leak"}))).await,
        StatusCode::CREATED,
    )
    .await;
    let pat = pat["token"].as_str().expect("token").to_owned();
    expect_status(app.get_auth("/me", &pat).await, StatusCode::OK).await;
    let client = register(&app, &owner, json!({"name": "Leak"})).await;
    let sdk = expect_status(sdk_session(&app, &client.key, &[]).await, StatusCode::CREATED).await;
    let sdk_refresh = sdk["refresh_token"].as_str().expect("refresh").to_owned();
    expect_problem(sdk_session(&app, &format!("{}x", client.key), &[]).await, 401, "key_invalid").await;

    let dump = app.dump_tables().await;
    assert!(dump.contains("customer-42") && dump.contains(&client.id), "the dump is not reading the new tables");
    let logged = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    assert!(logged.contains("\"request\""), "no request log lines were captured");
    for secret in [&pat, &client.key, &sdk_refresh, &owner.access, &owner.refresh] {
        assert!(!dump.contains(secret.as_str()), "a raw credential is stored: {}…", &secret[..8]);
        assert!(!logged.contains(secret.as_str()), "a raw credential was logged: {}…", &secret[..8]);
    }
}

crate::on_both_backends!(
    pat_lifecycle,
    pat_expiry_and_limits,
    client_keys_rotation_and_revocation,
    allowlists_decide_sdk_sessions,
    allowlist_switches,
    object_level_authorization,
    disabled_user_is_refused_everywhere,
    tenant_rate_limit,
    no_raw_credential_stored_or_logged,
);
