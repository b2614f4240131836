//! End to end through the gateway: every credential kind reaches the upstream with verified
//! context; spoofed context never does; kinds, scopes and roles are enforced; the built-in
//! routes (auth pass-through, internal 404, SDK sessions, socket tickets) behave; revocation
//! reaches the gateway within 100 ms.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Backend, expect_problem, expect_status, unique_email};

use crate::harness::{spawn_auth, spawn_gateway, spawn_upstream, standard_routes};

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

async fn get_as(url: &str, token: &str) -> reqwest::Response {
    let (k, v) = bearer(token);
    get(url, &[(k, &v)]).await
}

async fn sdk_session(url: &str, key: &str) -> Value {
    let response = reqwest::Client::new()
        .post(url)
        .header("x-api-key", key)
        .json(&json!({"external_user_id": "customer-7"}))
        .send()
        .await
        .unwrap();
    expect_status(response, StatusCode::CREATED).await
}

async fn each_credential_kind_reaches_the_upstream_with_verified_context(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let gw = spawn_gateway(&auth, &standard_routes(&upstream.url()), &[("SOCKET_SERVICE_URL", &upstream.url())]).await;
    let user = auth.signup(&unique_email("gw-kinds")).await;

    let seen = expect_status(get_as(&gw.at("/v1/user/orders/7"), &user.access).await, StatusCode::OK).await;
    assert_eq!(seen["kind"], json!("user"));
    assert_eq!(seen["user_id"], json!(user.user_id));
    assert_eq!(seen["session_id"], json!(user.session_id));
    assert_eq!(seen["role"], json!("member"));

    let (_, pat) = auth.create_pat(&user, json!({"name": "cli", "scopes": ["orders:read"]})).await;
    let seen = expect_status(get_as(&gw.at("/v1/user/orders"), &pat).await, StatusCode::OK).await;
    assert_eq!((seen["kind"].clone(), seen["user_id"].clone()), (json!("pat"), json!(user.user_id)));
    assert_eq!(seen["scopes"], json!(["orders:read"]));

    let client = auth.register_client(&user, json!({"name": "Shop"})).await;
    let sdk = sdk_session(&gw.at("/v1/sdk/session"), &client.key).await;
    assert_eq!(sdk["token_type"], json!("Bearer"));
    let sdk_token = sdk["access_token"].as_str().unwrap();
    let seen = expect_status(get_as(&gw.at("/v1/sdk/chat/rooms"), sdk_token).await, StatusCode::OK).await;
    assert_eq!(seen["kind"], json!("sdk"));
    assert_eq!(seen["tenant_id"], json!(client.id));
    assert_eq!(seen["subject"], json!(format!("sdk:{}:customer-7", client.id)));

    let seen =
        expect_status(get(&gw.at("/v1/partner/feed"), &[("x-api-key", &client.key)]).await, StatusCode::OK).await;
    assert_eq!((seen["kind"].clone(), seen["client_id"].clone()), (json!("api_key"), json!(client.id)));
    assert!(seen["user_id"].is_null());
    // A `pck_` Bearer is an API key too.
    let seen = expect_status(get_as(&gw.at("/v1/partner/feed"), &client.key).await, StatusCode::OK).await;
    assert_eq!(seen["kind"], json!("api_key"));

    // Socket tickets go to the socket service's `/ticket` with the same signed context.
    let (k, v) = bearer(&user.access);
    let ticket = reqwest::Client::new().post(gw.at("/v1/socket/ticket")).header(k, v).send().await.unwrap();
    let seen = expect_status(ticket, StatusCode::OK).await;
    assert_eq!(seen["user_id"], json!(user.user_id));
}

async fn spoofed_context_headers_never_reach_the_upstream(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let gw = spawn_gateway(&auth, &standard_routes(&upstream.url()), &[]).await;
    let user = auth.signup(&unique_email("gw-spoof")).await;
    let spoof = [
        ("x-user-id", "someone-else"),
        ("x-auth-kind", "service"),
        ("x-role", "admin"),
        ("x-scopes", "*"),
        ("x-context-timestamp", "1"),
        ("x-context-signature", "v1=00"),
    ];
    let (k, v) = bearer(&user.access);
    let mut headers = spoof.to_vec();
    headers.push((k, &v));
    let seen = expect_status(get(&gw.at("/v1/user/profile"), &headers).await, StatusCode::OK).await;
    assert_eq!(seen["user_id"], json!(user.user_id));
    assert_eq!(seen["role"], json!("member"));
    // On a public route nothing is signed, and the spoofed headers are gone all the same.
    let seen = expect_status(get(&gw.at("/v1/open/x?q=1"), &spoof).await, StatusCode::OK).await;
    let names: Vec<&str> = seen["headers"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for (name, _) in spoof {
        assert!(!names.contains(&name), "{name} reached the upstream: {names:?}");
    }
    assert!(names.contains(&"x-request-id") && names.contains(&"traceparent"), "{names:?}");
    assert_eq!(seen["path"], json!("/v1/open/x?q=1"));
    for headers in upstream.seen.lock().unwrap().iter() {
        assert_ne!(headers.get("x-user-id").and_then(|v| v.to_str().ok()), Some("someone-else"));
    }
}

async fn kinds_scopes_and_roles_are_enforced(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let gw = spawn_gateway(&auth, &standard_routes(&upstream.url()), &[]).await;
    let user = auth.signup(&unique_email("gw-enforce")).await;
    let client = auth.register_client(&user, json!({"name": "Shop"})).await;
    let sdk = sdk_session(&gw.at("/v1/sdk/session"), &client.key).await;
    let sdk_token = sdk["access_token"].as_str().unwrap();

    expect_problem(get(&gw.at("/v1/user/orders"), &[]).await, 401, "token_missing").await;
    expect_problem(get_as(&gw.at("/v1/user/orders"), "garbage").await, 401, "token_invalid").await;
    expect_problem(get_as(&gw.at("/v1/user/orders"), sdk_token).await, 403, "forbidden").await;
    expect_problem(get_as(&gw.at("/v1/sdk/chat"), &user.access).await, 403, "forbidden").await;
    expect_problem(get_as(&gw.at("/v1/partner/x"), &user.access).await, 403, "forbidden").await;
    let (_, pat) = auth.create_pat(&user, json!({"name": "narrow", "scopes": ["repos:read"]})).await;
    expect_problem(get_as(&gw.at("/v1/user/orders"), &pat).await, 403, "insufficient_scope").await;
    // Another spelling of the stricter route is that route, and what the upstream sees (and
    // verifies the signature over) is the normalised path.
    expect_problem(get_as(&gw.at("/v1/user/%6Frders/7"), &pat).await, 403, "insufficient_scope").await;
    let seen = expect_status(get_as(&gw.at("/v1/user/%70rofile/%6De?x=%41"), &user.access).await, StatusCode::OK);
    assert_eq!(seen.await["user_id"], json!(user.user_id));
    expect_problem(get_as(&gw.at("/v1/user/admin/users"), &user.access).await, 403, "forbidden").await;
    expect_problem(get_as(&gw.at("/v1/nowhere"), &user.access).await, 404, "not_found").await;
    // (A client library would resolve `..` itself; encoded separators and empty segments reach us.)
    for ambiguous in ["/v1/user/orders%2F..%2Fadmin", "/v1/user//admin"] {
        expect_problem(get(&gw.at(ambiguous), &[]).await, 400, "malformed_path").await;
    }
}

async fn built_in_routes_reach_the_auth_service_but_never_its_internal_api(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let gw = spawn_gateway(&auth, "", &[]).await;
    let email = unique_email("gw-built-in");
    let body = json!({"name": "Ada", "email": email, "password": testkit::PASSWORD});
    let signup = reqwest::Client::new().post(gw.at("/v1/auth/signup")).json(&body).send().await.unwrap();
    let signed_up = expect_status(signup, StatusCode::CREATED).await;
    let access = signed_up["access_token"].as_str().unwrap();
    let me = expect_status(get_as(&gw.at("/v1/auth/me"), access).await, StatusCode::OK).await;
    assert_eq!(me["email"], json!(email));
    let clients = expect_status(get_as(&gw.at("/v1/clients"), access).await, StatusCode::OK).await;
    assert!(clients.is_object() || clients.is_array(), "{clients}");
    for path in [
        "/v1/auth/internal/validate",
        "/v1/auth/internal",
        "/v1/auth/INTERNAL/validate",
        "/v1/auth/%69nternal/validate",
    ] {
        let response = reqwest::Client::new()
            .post(gw.at(path))
            .header("authorization", format!("Bearer {access}"))
            .json(&json!({"credential": access}))
            .send()
            .await
            .unwrap();
        expect_problem(response, 404, "not_found").await;
    }
    // `/v1/sdk/session` answers only POST, in the problem shape.
    expect_problem(get(&gw.at("/v1/sdk/session"), &[]).await, 405, "method_not_allowed").await;
    let no_key = reqwest::Client::new().post(gw.at("/v1/sdk/session")).json(&json!({})).send().await.unwrap();
    expect_problem(no_key, 401, "token_missing").await;
    for probe in ["/health", "/ready", "/metrics"] {
        assert_eq!(get(&gw.at(probe), &[]).await.status(), StatusCode::OK, "{probe}");
    }
    let metrics = get(&gw.at("/metrics"), &[]).await.text().await.unwrap();
    assert!(metrics.contains("gateway_requests_total") && metrics.contains("gateway_auth_cache_hit_ratio"));
}

/// Polls until `url` with `token` is refused; returns how long that took after `since`.
async fn refused_within(url: &str, token: &str, since: Instant) -> Duration {
    loop {
        let status = get_as(url, token).await.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(2), "still {status} two seconds after revocation");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn revocation_reaches_the_gateway_within_100ms(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let gw = spawn_gateway(&auth, &standard_routes(&upstream.url()), &[("IP_WHITELIST_ENABLED", "true")]).await;
    let user = auth.signup(&unique_email("gw-revoke")).await;
    let profile = gw.at("/v1/user/profile");

    // Logout.
    let session = auth.signup(&unique_email("gw-logout")).await;
    expect_status(get_as(&profile, &session.access).await, StatusCode::OK).await;
    let since = Instant::now();
    assert!(auth.post_auth("/logout", &session.access, None).await.status().is_success());
    let took = refused_within(&profile, &session.access, since).await;
    assert!(took < Duration::from_millis(100), "logout took {took:?}");

    // PAT revocation.
    let (pat_id, pat) = auth.create_pat(&user, json!({"name": "cli"})).await;
    expect_status(get_as(&profile, &pat).await, StatusCode::OK).await;
    let since = Instant::now();
    assert_eq!(auth.delete_auth(&format!("/tokens/{pat_id}"), &user.access).await.status(), StatusCode::NO_CONTENT);
    let took = refused_within(&profile, &pat, since).await;
    assert!(took < Duration::from_millis(100), "PAT revocation took {took:?}");

    // Key revocation.
    let client = auth.register_client(&user, json!({"name": "Shop"})).await;
    let feed = gw.at("/v1/partner/feed");
    expect_status(get_as(&feed, &client.key).await, StatusCode::OK).await;
    let since = Instant::now();
    let revoke = format!("/client/{}/api-keys/{}", client.id, client.key_id);
    assert!(auth.delete_auth(&revoke, &user.access).await.status().is_success());
    let took = refused_within(&feed, &client.key, since).await;
    assert!(took < Duration::from_millis(100), "key revocation took {took:?}");

    // An allowlist change.
    let client = auth.register_client(&user, json!({"name": "Shop 2"})).await;
    expect_status(get_as(&feed, &client.key).await, StatusCode::OK).await;
    let since = Instant::now();
    let allowlist = format!("/client/{}/ip-allowlist", client.id);
    let set = auth.put_auth(&allowlist, &user.access, &json!({"ip_allowlist": ["203.0.113.0/24"]})).await;
    assert!(set.status().is_success());
    let took = refused_within(&feed, &client.key, since).await;
    assert!(took < Duration::from_millis(100), "allowlist change took {took:?}");
}

testkit::on_both_backends!(
    each_credential_kind_reaches_the_upstream_with_verified_context,
    spoofed_context_headers_never_reach_the_upstream,
    kinds_scopes_and_roles_are_enforced,
    built_in_routes_reach_the_auth_service_but_never_its_internal_api,
    revocation_reaches_the_gateway_within_100ms,
);
