//! The edge's defences through a real stack: client allowlists and origins decided by the
//! auth service from the IP and `Origin` the gateway passes (with `X-Forwarded-For` believed
//! only from trusted proxies), CORS preflights, shared rate limits, and failures that fail
//! closed (auth service down) or fast (upstream down), with local limits when Redis is gone.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use testkit::{Backend, expect_problem, expect_status, unique_email};

use crate::harness::{spawn_auth, spawn_gateway, spawn_upstream, standard_routes};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn allowlists_and_origins_through_the_gateway(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let routes = standard_routes(&upstream.url());
    let trusting = spawn_gateway(&auth, &routes, &[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let untrusting = spawn_gateway(&auth, &routes, &[]).await;
    let owner = auth.signup(&unique_email("gw-allow")).await;
    let shop = auth
        .register_client(
            &owner,
            json!({"name": "Shop", "ip_allowlist": ["203.0.113.0/24"], "allowed_origins": ["https://shop.example.com"]}),
        )
        .await;
    let feed = |gw: &crate::harness::Gw| gw.at("/v1/partner/feed");
    let call = |url: String, xff: &'static str, origin: Option<&'static str>| {
        let key = shop.key.clone();
        async move {
            let mut request = client().get(url).header("x-api-key", key).header("x-forwarded-for", xff);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            request.send().await.unwrap()
        }
    };
    // From a trusted proxy, the forwarded address decides.
    expect_status(call(feed(&trusting), "203.0.113.9", None).await, StatusCode::OK).await;
    expect_problem(call(feed(&trusting), "198.51.100.1", None).await, 403, "ip_not_allowed").await;
    // From anyone else the header is ignored: the peer (127.0.0.1) is not on the list.
    expect_problem(call(feed(&untrusting), "203.0.113.9", None).await, 403, "ip_not_allowed").await;
    // The client's own origins decide the actual request; `null` matches nothing.
    let allowed = call(feed(&trusting), "203.0.113.9", Some("https://shop.example.com")).await;
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://shop.example.com");
    expect_status(allowed, StatusCode::OK).await;
    for origin in ["https://evil.example.com", "null", "https://shop.example.com.evil.net"] {
        expect_problem(call(feed(&trusting), "203.0.113.9", Some(origin)).await, 403, "origin_not_allowed").await;
    }

    // Preflights are answered from every client's origins, and a refused one reflects nothing.
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, trusting.at("/v1/partner/feed"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "x-api-key, content-type")
            .send()
    };
    let ok = preflight("https://shop.example.com").await.unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://shop.example.com");
    assert_eq!(ok.headers()["access-control-allow-headers"], "x-api-key, content-type");
    for refused in ["https://evil.example.com", "null", "https://example.com"] {
        let response = preflight(refused).await.unwrap();
        assert!(response.headers().get("access-control-allow-origin").is_none(), "{refused}");
        expect_problem(response, 403, "origin_not_allowed").await;
    }
    // A client added later is in the union as soon as its `auth:client.updated` arrives.
    auth.register_client(&owner, json!({"name": "Later", "allowed_origins": ["https://later.example.com"]})).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while preflight("https://later.example.com").await.unwrap().status() != StatusCode::NO_CONTENT {
        assert!(Instant::now() < deadline, "the new client's origin never reached the preflight list");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn rate_limits_answer_429_with_headers_and_are_shared(backend: Backend) {
    let shared = matches!(backend, Backend::Postgres { .. });
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let routes = standard_routes(&upstream.url());
    let first = spawn_gateway(&auth, &routes, &[]).await;
    let second = spawn_gateway(&auth, &routes, &[]).await;
    // `/v1/open` allows 3 per minute per IP. With Redis the two instances share the bucket.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let gw = if shared && i % 2 == 1 { &second } else { &first };
        let response = client().get(gw.at("/v1/open/ping")).send().await.unwrap();
        if response.status() == StatusCode::OK {
            assert_eq!(response.headers()["ratelimit-limit"], "3");
            assert_eq!(response.headers()["ratelimit-remaining"], (2 - i).to_string().as_str());
        }
        statuses.push(response.status().as_u16());
        if i == 3 {
            assert_eq!(response.headers()["ratelimit-remaining"], "0");
            let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=20).contains(&retry_after), "{retry_after}");
            expect_problem(response, 429, "rate_limited").await;
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);

    // A tenant's own limit replaces the route default.
    let owner = auth.signup(&unique_email("gw-limit")).await;
    let shop = auth.register_client(&owner, json!({"name": "Shop"})).await;
    let limit = json!({"requests": 2, "per": "1m"});
    let set = auth.put_auth(&format!("/client/{}/rate-limit", shop.id), &owner.access, &limit).await;
    assert!(set.status().is_success());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut statuses = Vec::new();
    for i in 0..3 {
        let gw = if shared && i == 1 { &second } else { &first };
        let response = client().get(gw.at("/v1/partner/feed")).header("x-api-key", &shop.key).send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
}

async fn auth_service_down_fails_closed_for_uncached_credentials(backend: Backend) {
    let mut auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let gw = spawn_gateway(&auth, &standard_routes(&upstream.url()), &[]).await;
    let cached = auth.signup(&unique_email("gw-cached")).await;
    let uncached = auth.signup(&unique_email("gw-uncached")).await;
    let profile = gw.at("/v1/user/profile");
    expect_status(client().get(&profile).bearer_auth(&cached.access).send().await.unwrap(), StatusCode::OK).await;
    auth.stop().await;
    for _ in 0..3 {
        let response = client().get(&profile).bearer_auth(&uncached.access).send().await.unwrap();
        assert!(response.headers().contains_key("retry-after"));
        expect_problem(response, 503, "unavailable").await;
    }
    // An answer already cached still stands (until its TTL), as SPEC §5 allows.
    expect_status(client().get(&profile).bearer_auth(&cached.access).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(client().get(gw.at("/ready")).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    auth.start_again().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = client().get(&profile).bearer_auth(&uncached.access).send().await.unwrap();
        if response.status() == StatusCode::OK {
            break;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "the gateway did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn upstream_down_opens_the_breaker_and_recovers(backend: Backend) {
    let auth = spawn_auth(backend).await;
    // Reserve a port, then free it: nothing listens there until the upstream starts.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let gw = spawn_gateway(&auth, &standard_routes(&format!("http://{addr}")), &[]).await;
    let user = auth.signup(&unique_email("gw-breaker")).await;
    let profile = gw.at("/v1/user/profile");
    for _ in 0..5 {
        let response = client().get(&profile).bearer_auth(&user.access).send().await.unwrap();
        expect_problem(response, 503, "unavailable").await;
    }
    // Open now: refused without trying (the metric says so), with `Retry-After`.
    let response = client().get(&profile).bearer_auth(&user.access).send().await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    expect_problem(response, 503, "unavailable").await;
    let metrics = client().get(gw.at("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("gateway_upstream_breaker_open{{upstream=\"http://{addr}\"}} 1")), "{metrics}");

    // The upstream comes up on that port; after the open period a trial request gets through.
    let upstream = crate::harness::spawn_upstream_at(addr).await;
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let response = client().get(&profile).bearer_auth(&user.access).send().await.unwrap();
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the breaker never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!upstream.seen.lock().unwrap().is_empty());
}

/// Redis unreachable (a pool to a closed port): authentication still works and limits are
/// kept locally, which the metrics report.
async fn redis_down_falls_back_to_local_limits() {
    let auth = spawn_auth(Backend::Sqlite).await;
    let upstream = spawn_upstream().await;
    let gw = crate::harness::spawn_gateway_with_dead_redis(&auth, &standard_routes(&upstream.url())).await;
    let user = auth.signup(&unique_email("gw-redis-down")).await;
    expect_status(
        client().get(gw.at("/v1/user/profile")).bearer_auth(&user.access).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client().get(gw.at("/v1/open/x")).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let metrics = client().get(gw.at("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gateway_rate_limit_local_fallback 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_keeps_authenticating_with_local_limits() {
    redis_down_falls_back_to_local_limits().await;
}

fn rpcs(metrics: &str) -> u64 {
    counter(metrics, "gateway_auth_rpcs_total")
}

/// Validations the cache could not answer, each one call to the auth service: unlike
/// `gateway_auth_rpcs_total` it leaves out the origin-list refreshes an `auth:client.updated`
/// brings (from any deployment sharing the bus) and service-token renewals.
fn misses(metrics: &str) -> u64 {
    counter(metrics, "gateway_auth_cache_misses_total")
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not exposed"))
}

/// Limits come before work (SPEC §6): `AUTH_FAILURE_LIMIT` is a per-IP reservation taken
/// before a credential is validated, so a flood of bogus credentials stops reaching the auth
/// service; `IP_RATE_LIMIT` is counted before authentication too.
async fn failed_authentications_are_limited_before_validation(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let routes = standard_routes(&upstream.url());
    let gw = spawn_gateway(&auth, &routes, &[("AUTH_FAILURE_LIMIT", "5/minute")]).await;
    let user = auth.signup(&unique_email("gw-authfail")).await;
    // Successes refund their reservation: many valid requests never reach the limit.
    for _ in 0..8 {
        let ok = client().get(gw.at("/v1/user/profile/me")).bearer_auth(&user.access).send().await.unwrap();
        expect_status(ok, StatusCode::OK).await;
    }
    for i in 0..5 {
        let bogus = client().get(gw.at("/v1/user/profile/me")).bearer_auth(format!("bogus-{i}")).send().await;
        expect_problem(bogus.unwrap(), 401, "token_invalid").await;
    }
    let metrics = || async { client().get(gw.at("/metrics")).send().await.unwrap().text().await.unwrap() };
    let before = misses(&metrics().await);
    for i in 5..15 {
        let refused = client().get(gw.at("/v1/user/profile/me")).bearer_auth(format!("bogus-{i}")).send().await;
        let refused = refused.unwrap();
        assert!(refused.headers().contains_key("retry-after"));
        expect_problem(refused, 429, "rate_limited").await;
    }
    assert_eq!(misses(&metrics().await), before, "refused credentials reached the auth service");
    // A valid credential the cache already allows takes no reservation: it is no guess, and
    // costs no lookup, so it passes even while the IP's guesses are refused.
    let cached = client().get(gw.at("/v1/user/profile/me")).bearer_auth(&user.access).send().await.unwrap();
    expect_status(cached, StatusCode::OK).await;

    let limited = spawn_gateway(&auth, &routes, &[("IP_RATE_LIMIT", "3/minute")]).await;
    for i in 0..3 {
        let bogus = client().get(limited.at("/v1/user/profile/me")).bearer_auth(format!("other-{i}")).send().await;
        expect_problem(bogus.unwrap(), 401, "token_invalid").await;
    }
    let fourth = client().get(limited.at("/v1/user/profile/me")).bearer_auth("other-3").send().await.unwrap();
    expect_problem(fourth, 429, "rate_limited").await;
}

/// A burst of concurrent requests carrying one valid credential the cache does not hold yet
/// (a new token, or one whose cached answer just expired) is one validation and one
/// reservation, not one per request: with `AUTH_FAILURE_LIMIT=5/minute`, forty at once all
/// pass, and the auth service is asked once. Calls that are not validations (the origin list
/// fetched again after a client changed, here or in another deployment on the same bus) are
/// not counted as cache misses.
async fn a_burst_of_one_uncached_valid_credential_takes_one_reservation(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let routes = standard_routes(&upstream.url());
    let gw = spawn_gateway(&auth, &routes, &[("AUTH_FAILURE_LIMIT", "5/minute")]).await;
    let user = auth.signup(&unique_email("gw-burst")).await;
    let metrics = || async { client().get(gw.at("/metrics")).send().await.unwrap().text().await.unwrap() };
    let (before, rpcs_before) = {
        let text = metrics().await;
        (misses(&text), rpcs(&text))
    };
    // A client registered now makes the gateway fetch the origin list again: a call, not a miss.
    auth.register_client(&user, json!({"name": "Burst", "allowed_origins": ["https://burst.example.com"]})).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while rpcs(&metrics().await) == rpcs_before {
        assert!(Instant::now() < deadline, "the origin list was not fetched again after a client was registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let burst = (0..40).map(|_| client().get(gw.at("/v1/user/profile/me")).bearer_auth(&user.access).send());
    let statuses: Vec<u16> =
        futures::future::join_all(burst).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let after = metrics().await;
    assert_eq!(misses(&after) - before, 1, "one validation for the whole burst");
    assert!(rpcs(&after) - rpcs_before >= 2, "the origin refresh and the validation are both calls");
}

/// A peer that never finishes its request head, or idles on a kept-alive connection, is
/// dropped after `HTTP_HEADER_READ_TIMEOUT` (slowloris).
async fn slow_and_idle_clients_are_dropped(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let upstream = spawn_upstream().await;
    let gw = spawn_gateway(&auth, &standard_routes(&upstream.url()), &[("HTTP_HEADER_READ_TIMEOUT", "300ms")]).await;
    let addr = gw.url.trim_start_matches("http://").parse().unwrap();
    let slow = testkit::slow_client_is_dropped_after(addr, Duration::from_secs(3)).await;
    assert!(slow.is_some_and(|t| t >= Duration::from_millis(250)), "slow client: {slow:?}");
    let idle = testkit::idle_keep_alive_is_dropped_after(addr, Duration::from_secs(3)).await;
    assert!(idle.is_some(), "idle keep-alive client kept");
}

testkit::on_both_backends!(
    failed_authentications_are_limited_before_validation,
    a_burst_of_one_uncached_valid_credential_takes_one_reservation,
    slow_and_idle_clients_are_dropped,
    allowlists_and_origins_through_the_gateway,
    rate_limits_answer_429_with_headers_and_are_shared,
    auth_service_down_fails_closed_for_uncached_credentials,
    upstream_down_opens_the_breaker_and_recovers,
);
