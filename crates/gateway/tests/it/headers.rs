//! What crosses the edge in headers (SPEC §6): the gateway's own forwarding and context
//! headers cannot be removed by a client's `Connection` header, credentials stop at the edge
//! unless a route opts in, and conflicting or empty credentials are refused, never "first
//! wins".

use reqwest::StatusCode;
use serde_json::Value;
use testkit::{Backend, expect_problem, expect_status, unique_email};

use crate::harness::{spawn_auth, spawn_gateway, spawn_upstream, standard_routes};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// `Connection` may name only hop-by-hop headers of the client's own connection: naming the
/// gateway's headers removes nothing the gateway adds, and the signed context still verifies.
async fn connection_cannot_remove_the_gateways_headers(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let gw = spawn_gateway(&auth, &standard_routes(&upstream.url()), &[]).await;
    let named = "keep-alive, X-Forwarded-For, X-Request-Id, X-Forwarded-Proto, X-Forwarded-Host, traceparent";
    let response = client()
        .get(gw.at("/v1/open/x"))
        .header("connection", named)
        .header("x-request-id", "req-123")
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    let seen = expect_status(response, StatusCode::OK).await;
    let headers: Vec<&str> = seen["headers"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for name in ["x-forwarded-for", "x-request-id", "x-forwarded-proto", "x-forwarded-host"] {
        assert!(headers.contains(&name), "{name} missing upstream: {headers:?}");
    }
    let last = upstream.seen.lock().unwrap().last().cloned().unwrap();
    // The client's own id, which it named hop-by-hop, is gone; the gateway's replaces it.
    assert_ne!(last["x-request-id"], "req-123");
    assert_eq!(last["x-request-id"].len(), 36);
    // The peer is not a trusted proxy: its X-Forwarded-For is replaced by the peer address.
    assert_eq!(last["x-forwarded-for"], "127.0.0.1");

    let user = auth.signup(&unique_email("gw-conn")).await;
    let context = "X-Context-Signature, X-Context-Timestamp, X-User-Id, X-Auth-Kind, X-Scopes, X-Request-Id";
    let response = client()
        .get(gw.at("/v1/user/profile/me"))
        .bearer_auth(&user.access)
        .header("connection", context)
        .send()
        .await
        .unwrap();
    let seen = expect_status(response, StatusCode::OK).await;
    assert_eq!(seen["user_id"], user.user_id.as_str());
}

/// The credential and the `pc_*` cookies never reach a configured upstream, unless the route
/// sets `forward_credentials = true`; other cookies pass.
async fn credentials_stop_at_the_edge(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let routes = format!(
        "{}\n[[routes]]\nprefix = \"/v1/user/legacy\"\nupstream = \"{}\"\nforward_credentials = true\n",
        standard_routes(&upstream.url()),
        upstream.url()
    );
    let gw = spawn_gateway(&auth, &routes, &[]).await;
    let owner = auth.signup(&unique_email("gw-creds")).await;
    let shop = auth.register_client(&owner, serde_json::json!({"name": "Shop"})).await;
    let cookie = "pc_refresh=pcr_secret; theme=dark; pc_session=x";

    let response =
        client().get(gw.at("/v1/user/profile/me")).bearer_auth(&owner.access).header("cookie", cookie).send().await;
    expect_status(response.unwrap(), StatusCode::OK).await;
    let response = client().get(gw.at("/v1/partner/feed")).header("x-api-key", &shop.key).send().await.unwrap();
    expect_status(response, StatusCode::OK).await;
    let response =
        client().get(gw.at("/v1/partner/feed")).bearer_auth(&shop.key).header("cookie", "pc_refresh=a").send().await;
    expect_status(response.unwrap(), StatusCode::OK).await;
    {
        let seen = upstream.seen.lock().unwrap();
        for headers in seen.iter() {
            assert!(headers.get("authorization").is_none(), "Authorization reached the upstream: {headers:?}");
            assert!(headers.get("x-api-key").is_none(), "X-API-Key reached the upstream: {headers:?}");
            for value in headers.get_all("cookie") {
                assert!(!value.to_str().unwrap().contains("pc_"), "a pc_ cookie reached the upstream: {value:?}");
            }
        }
        assert_eq!(seen[0]["cookie"], "theme=dark");
    }

    let response =
        client().get(gw.at("/v1/user/legacy/x")).bearer_auth(&owner.access).header("cookie", cookie).send().await;
    expect_status(response.unwrap(), StatusCode::OK).await;
    let last = upstream.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last["authorization"], format!("Bearer {}", owner.access).as_str());
    assert_eq!(last["cookie"], cookie);
}

/// Two credentials that differ are refused with 401 `token_invalid`; the scheme is
/// case-insensitive; an empty token is `token_missing`.
async fn conflicting_credentials_are_refused(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let gw = spawn_gateway(&auth, &standard_routes(&upstream.url()), &[]).await;
    let owner = auth.signup(&unique_email("gw-conflict")).await;
    let other = auth.signup(&unique_email("gw-conflict-2")).await;
    let shop = auth.register_client(&owner, serde_json::json!({"name": "Shop"})).await;
    let url = gw.at("/v1/user/profile/me");

    let two_lines = client()
        .get(&url)
        .header("authorization", format!("Bearer {}", owner.access))
        .header("authorization", format!("Bearer {}", other.access))
        .send()
        .await
        .unwrap();
    expect_problem(two_lines, 401, "token_invalid").await;
    let with_key = client().get(&url).bearer_auth(&owner.access).header("x-api-key", &shop.key).send().await;
    expect_problem(with_key.unwrap(), 401, "token_invalid").await;
    let two_keys = client()
        .get(gw.at("/v1/partner/feed"))
        .header("x-api-key", &shop.key)
        .header("x-api-key", "pck_other")
        .send()
        .await
        .unwrap();
    expect_problem(two_keys, 401, "token_invalid").await;

    let lower = client().get(&url).header("authorization", format!("bearer {}", owner.access)).send().await;
    expect_status(lower.unwrap(), StatusCode::OK).await;
    let upper = client().get(&url).header("authorization", format!("BEARER {}", owner.access)).send().await;
    expect_status(upper.unwrap(), StatusCode::OK).await;
    let empty = client().get(&url).header("authorization", "Bearer ").send().await.unwrap();
    let body = expect_problem(empty, 401, "token_missing").await;
    assert!(body["detail"].is_string());
    let empty_key = client().get(gw.at("/v1/partner/feed")).header("x-api-key", "").send().await.unwrap();
    expect_problem(empty_key, 401, "token_missing").await;
}

/// CORS on actual responses (SPEC §6): an origin is reflected only when the request's own
/// client allows it (API keys and SDK tokens, whose origin the auth service checked) or it is
/// in `CORS_ORIGIN`; `Access-Control-Allow-Credentials` only for `CORS_ORIGIN`.
async fn actual_responses_reflect_only_the_callers_own_origins(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let gw =
        spawn_gateway(&auth, &standard_routes(&upstream.url()), &[("CORS_ORIGIN", "https://app.example.com")]).await;
    let owner = auth.signup(&unique_email("gw-cors")).await;
    let shop = auth
        .register_client(&owner, serde_json::json!({"name": "Shop", "allowed_origins": ["https://shop.example.com"]}))
        .await;
    // Wait until the gateway knows the new client's origins (preflight union).
    let preflight = || {
        client()
            .request(reqwest::Method::OPTIONS, gw.at("/v1/partner/feed"))
            .header("origin", "https://shop.example.com")
            .header("access-control-request-method", "GET")
            .send()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while preflight().await.unwrap().status() != StatusCode::NO_CONTENT {
        assert!(std::time::Instant::now() < deadline, "the client's origin never reached the gateway");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let get = |path: &str, origin: &'static str| client().get(gw.at(path)).header("origin", origin);

    // The key's own client allows the origin: reflected, without credentials.
    let keyed = get("/v1/partner/feed", "https://shop.example.com").header("x-api-key", &shop.key).send().await;
    let keyed = keyed.unwrap();
    assert_eq!(keyed.headers()["access-control-allow-origin"], "https://shop.example.com");
    assert!(keyed.headers().get("access-control-allow-credentials").is_none());
    expect_status(keyed, StatusCode::OK).await;
    // A user token from some client's origin: that client is not the caller, nothing reflected.
    let user = get("/v1/user/profile/me", "https://shop.example.com").bearer_auth(&owner.access).send().await;
    let user = user.unwrap();
    assert!(user.headers().get("access-control-allow-origin").is_none(), "{:?}", user.headers());
    expect_status(user, StatusCode::OK).await;
    // The platform's own origin: reflected with credentials.
    let app = get("/v1/user/profile/me", "https://app.example.com").bearer_auth(&owner.access).send().await;
    let app = app.unwrap();
    assert_eq!(app.headers()["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(app.headers()["access-control-allow-credentials"], "true");
}

/// SPEC §6: a caller's `traceparent` is continued only from `TRUSTED_PROXIES`; anyone else's
/// starts a new trace (linked to theirs when spans are exported), so a client cannot choose
/// the trace its request joins.
async fn only_a_trusted_proxys_trace_is_continued(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let routes = standard_routes(&upstream.url());
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{caller_trace}-00f067aa0ba902b7-01");
    let forwarded = |upstream: &crate::harness::Upstream| {
        let last = upstream.seen.lock().unwrap().last().cloned().unwrap();
        last["traceparent"].to_str().unwrap().to_owned()
    };
    for (trusted, vars) in [(false, &[][..]), (true, &[("TRUSTED_PROXIES", "127.0.0.1/32")][..])] {
        let gw = spawn_gateway(&auth, &routes, vars).await;
        let response = client().get(gw.at("/v1/open/x")).header("traceparent", &traceparent).send().await.unwrap();
        expect_status(response, StatusCode::OK).await;
        let seen = forwarded(&upstream);
        let parts: Vec<&str> = seen.split('-').collect();
        assert_eq!(parts.len(), 4, "{seen}");
        assert_eq!(parts[1] == caller_trace, trusted, "trusted proxy: {trusted}; forwarded {seen}");
    }
}

testkit::on_both_backends!(
    only_a_trusted_proxys_trace_is_continued,
    actual_responses_reflect_only_the_callers_own_origins,
    connection_cannot_remove_the_gateways_headers,
    credentials_stop_at_the_edge,
    conflicting_credentials_are_refused,
);
