//! The handshake: each credential path, and every bad credential refused with its HTTP status
//! before any upgrade.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Backend, FIREFOX, expect_status, spawn_auth, unique_email};

use crate::{connect_bearer, connect_with, context_of, expect_refused, next_json, ping, send, signed, spawn_socket};

/// `Authorization: Bearer`: the socket opens, answers, and its context is stored under the
/// user until it closes.
async fn bearer_header_connects_and_stores_context(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let user = app.signup(&unique_email("bearer")).await;
    let mut ws = connect_bearer(&socket, &user.access).await;
    ping(&mut ws).await;

    let ids = socket.stored_for(&user.user_id).await;
    assert_eq!(ids.len(), 1);
    let stored = socket.service.contexts().get(&ids[0]).await.unwrap().expect("stored context");
    assert_eq!(stored.context.user_id.as_deref(), Some(user.user_id.as_str()));
    assert_eq!(stored.context.session_id.as_deref(), Some(user.session_id.as_str()));

    ws.close(None).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !socket.stored_for(&user.user_id).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "context not removed on close");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(socket.service.contexts().get(&ids[0]).await.unwrap().is_none());
    socket.assert_no_1011().await;
}

/// `Sec-WebSocket-Protocol: bearer, <token>` is answered with `bearer` alone.
async fn subprotocol_pair_is_answered_with_bearer_only(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let user = app.signup(&unique_email("subprotocol")).await;
    let protocols = format!("bearer, {}", user.access);
    let (mut ws, response) =
        connect_with(&socket.ws_url(), &[("sec-websocket-protocol", &protocols)]).await.expect("connected");
    let answered: Vec<_> = response.headers().get_all("sec-websocket-protocol").iter().collect();
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0], "bearer");
    for (_, value) in response.headers() {
        assert!(!value.to_str().unwrap_or_default().contains(&user.access), "the token was echoed");
    }
    ping(&mut ws).await;
    // A bad token in the same form is refused like any other.
    expect_refused(&socket.ws_url(), &[("sec-websocket-protocol", "bearer, not-a-token")], 401, "token_invalid").await;
}

/// `POST /ticket` from signed gateway headers mints a ticket that opens one connection, once.
async fn ticket_connects_once(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let user = app.signup(&unique_email("ticket")).await;
    let context = context_of(&app, &user.access).await;

    // Without (or with forged) context headers there is no ticket.
    let unsigned = socket.http.post(socket.url("/ticket")).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let mut forged = signed(&context, "/ticket");
    forged.insert("x-user-id", "someone-else".parse().unwrap());
    let forged = socket.http.post(socket.url("/ticket")).headers(forged).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    // The signed context alone is not enough: a ticket is minted from a validated credential.
    let bare = socket.http.post(socket.url("/ticket")).headers(signed(&context, "/ticket")).send().await.unwrap();
    testkit::expect_problem(bare, 401, "token_missing").await;
    let response = socket
        .http
        .post(socket.url("/ticket"))
        .headers(signed(&context, "/ticket"))
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap();
    let body: Value = expect_status(response, StatusCode::OK).await;
    assert_eq!(body["expires_in"], json!(30));
    let ticket = body["ticket"].as_str().expect("ticket").to_owned();

    let url = format!("{}?ticket={ticket}", socket.ws_url());
    let (mut ws, _) = connect_with(&url, &[]).await.expect("ticket accepted");
    ping(&mut ws).await;
    let ids = socket.stored_for(&user.user_id).await;
    assert_eq!(ids.len(), 1, "the ticket's context is stored under its user");

    // Single use.
    expect_refused(&url, &[], 401, "token_invalid").await;
    expect_refused(&format!("{}?ticket=pct_unknown", socket.ws_url()), &[], 401, "token_invalid").await;

    // Revocation still applies to a ticket's connection.
    expect_status(app.post_auth("/logout", &user.access, None).await, StatusCode::NO_CONTENT).await;
    assert_eq!(crate::expect_close(&mut ws, Duration::from_secs(2)).await, 4409);
    socket.assert_no_1011().await;
}

/// Bad, expired and revoked credentials get 401, foreign origins 403, before any upgrade.
async fn bad_credentials_are_refused_before_upgrade(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[("SOCKET_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let url = socket.ws_url();
    expect_refused(&url, &[], 401, "token_missing").await;
    let refused = expect_refused(&url, &[("authorization", "Bearer garbage")], 401, "token_invalid").await;
    assert!(refused.headers.get("www-authenticate").is_some());
    expect_refused(&url, &[("authorization", "Bearer pcp_000000000000000000000000000000000000")], 401, "token_invalid")
        .await;

    let email = unique_email("refused");
    let user = app.signup(&email).await;
    let bearer = format!("Bearer {}", user.access);
    // Origins: none (not a browser) and an allowed one pass; a foreign or malformed one is 403.
    let (mut ws, _) = connect_with(&url, &[("authorization", &bearer)]).await.expect("no origin");
    ping(&mut ws).await;
    let (mut ws2, _) = connect_with(&url, &[("authorization", &bearer), ("origin", "https://APP.example.com:443")])
        .await
        .expect("allowed origin");
    ping(&mut ws2).await;
    expect_refused(&url, &[("authorization", &bearer), ("origin", "https://evil.example")], 403, "origin_not_allowed")
        .await;
    expect_refused(&url, &[("authorization", &bearer), ("origin", "null")], 403, "origin_not_allowed").await;

    // Revoked: log a second device out, then try its token.
    let other = app.login(&email, FIREFOX).await;
    expect_status(app.post_auth("/logout", &other.access, None).await, StatusCode::NO_CONTENT).await;
    let Err(refused) = connect_with(&url, &[("authorization", &format!("Bearer {}", other.access))]).await else {
        panic!("a logged-out token opened a socket");
    };
    assert_eq!(refused.status, 401);
    let code = refused.body["code"].as_str().unwrap_or_default();
    assert!(["session_ended", "token_revoked"].contains(&code), "{:?}", refused.body);

    // Expired: the auth service's clock moves past the 15-minute access token.
    let late = app.login(&email, FIREFOX).await;
    app.clock.advance(time::Duration::minutes(16));
    expect_refused(&url, &[("authorization", &format!("Bearer {}", late.access))], 401, "token_expired").await;

    // Not an upgrade at all.
    let plain = socket.http.get(socket.url("/ws")).bearer_auth(&user.access).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::UPGRADE_REQUIRED);
    socket.assert_no_1011().await;
}

/// SDK tokens are checked against their tenant's origins by the auth service.
async fn sdk_token_origin_is_the_tenants(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let owner = app.signup(&unique_email("tenant-owner")).await;
    let registered = expect_status(
        app.post_auth(
            "/client/register",
            &owner.access,
            Some(&json!({"name": "shop", "allowed_origins": ["https://shop.example"]})),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let key = registered["api_key"]["key"].as_str().unwrap().to_owned();
    let client_id = registered["client"]["id"].as_str().unwrap().to_owned();
    let session = app
        .http
        .post(app.url("/sdk/session"))
        .header("x-api-key", &key)
        .json(&json!({"external_user_id": "customer-7"}))
        .send()
        .await
        .unwrap();
    let session = expect_status(session, StatusCode::CREATED).await;
    let sdk = session["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {sdk}");
    let url = socket.ws_url();

    let (mut ws, _) =
        connect_with(&url, &[("authorization", &bearer), ("origin", "https://shop.example")]).await.expect("tenant");
    // The SDK user's own channel and its tenant's channels are allowed.
    send(&mut ws, json!({"type": "subscribe", "channel": format!("tenant:{client_id}:news")})).await;
    ping(&mut ws).await;
    send(&mut ws, json!({"type": "subscribe", "channel": "tenant:someone-else:news", "ref": 1})).await;
    let error = next_json(&mut ws).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str(), &error["ref"]),
        (Some("error"), Some("forbidden"), &json!(1))
    );

    // A tenant-wide publish reaches the tenant's connections on `tenant:{id}`.
    let token = crate::service_token(&app).await;
    let body = json!({"tenant_id": client_id, "data": {"notice": "maintenance"}});
    let response =
        socket.http.post(socket.url("/internal/publish")).bearer_auth(&token).json(&body).send().await.unwrap();
    expect_status(response, StatusCode::ACCEPTED).await;
    let got = next_json(&mut ws).await;
    assert_eq!(
        got,
        json!({"type": "message", "channel": format!("tenant:{client_id}"), "data": {"notice": "maintenance"}})
    );

    expect_refused(&url, &[("authorization", &bearer), ("origin", "https://evil.example")], 403, "origin_not_allowed")
        .await;
    socket.assert_no_1011().await;
}

/// A peer that stops answering pings is closed with 4408.
async fn silent_peer_is_closed_4408(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[("SOCKET_HEARTBEAT_INTERVAL", "200ms")]).await;
    let user = app.signup(&unique_email("silent")).await;
    let mut ws = connect_bearer(&socket, &user.access).await;
    // Not reading means not answering the server's pings.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(crate::expect_close(&mut ws, Duration::from_secs(2)).await, 4408);
    socket.assert_no_1011().await;
}

/// With the auth service down, a credential it never answered for gets 503 and Retry-After.
async fn auth_service_down_is_503(backend: Backend) {
    let mut app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let user = app.signup(&unique_email("down")).await;
    let ready = socket.http.get(socket.url("/ready")).send().await.unwrap();
    expect_status(ready, StatusCode::OK).await;
    // SPEC §6's one request-id rule: kept when well-formed, otherwise a new UUIDv4.
    for (sent, kept) in [("trace-7", true), ("a/b", false), ("a b", false)] {
        let response = socket.http.get(socket.url("/health")).header("x-request-id", sent).send().await.unwrap();
        let echoed = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(echoed == sent, kept, "{sent:?} came back as {echoed:?}");
        assert!(kept || uuid::Uuid::parse_str(echoed).is_ok(), "{echoed:?}");
    }
    app.stop().await;
    let ready = socket.http.get(socket.url("/ready")).send().await.unwrap();
    testkit::expect_problem(ready, 503, "unavailable").await;
    let refused =
        expect_refused(&socket.ws_url(), &[("authorization", &format!("Bearer {}", user.access))], 503, "unavailable")
            .await;
    assert!(refused.headers.get("retry-after").is_some());
}

/// A peer that never finishes its handshake's head, or idles on a kept-alive connection, is
/// dropped after `HTTP_HEADER_READ_TIMEOUT`; an upgraded socket is not (it has its own
/// heartbeat).
async fn slow_clients_are_dropped_but_sockets_are_not(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[("HTTP_HEADER_READ_TIMEOUT", "300ms")]).await;
    let slow = testkit::slow_client_is_dropped_after(socket.addr, Duration::from_secs(3)).await;
    assert!(slow.is_some_and(|t| t >= Duration::from_millis(250)), "slow client: {slow:?}");
    let idle = testkit::idle_keep_alive_is_dropped_after(socket.addr, Duration::from_secs(3)).await;
    assert!(idle.is_some(), "idle keep-alive client kept");
    let user = app.signup(&unique_email("upgraded")).await;
    let mut ws = connect_bearer(&socket, &user.access).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    ping(&mut ws).await;
    socket.assert_no_1011().await;
}

/// `AUTH_FAILURE_LIMIT` is reserved before a handshake's credential is validated: valid
/// credentials give theirs back, bogus ones past the limit get 429 without a lookup.
async fn failed_handshakes_are_limited_before_validation(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[("AUTH_FAILURE_LIMIT", "3/minute")]).await;
    let user = app.signup(&unique_email("ws-authfail")).await;
    for _ in 0..5 {
        let mut ws = connect_bearer(&socket, &user.access).await;
        ping(&mut ws).await;
    }
    for i in 0..3 {
        let bogus = format!("Bearer bogus-{i}");
        expect_refused(&socket.ws_url(), &[("authorization", &bogus)], 401, "token_invalid").await;
    }
    let refused = expect_refused(&socket.ws_url(), &[("authorization", "Bearer bogus-3")], 429, "rate_limited").await;
    assert!(refused.headers.get("retry-after").is_some());
}

/// Concurrent handshakes with one valid credential (a page opening many sockets, clients
/// behind one NAT reconnecting after a restart) take turns for the reservation: with
/// `AUTH_FAILURE_LIMIT=3/minute`, twenty at once all connect.
async fn a_burst_of_handshakes_with_one_credential_is_not_limited(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[("AUTH_FAILURE_LIMIT", "3/minute")]).await;
    let user = app.signup(&unique_email("ws-burst")).await;
    let bearer = format!("Bearer {}", user.access);
    let url = socket.ws_url();
    let headers = [("authorization", bearer.as_str())];
    let burst = (0..20).map(|_| connect_with(&url, &headers));
    let results = futures::future::join_all(burst).await;
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).map(|r| r.status).collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
}

testkit::on_both_backends!(
    failed_handshakes_are_limited_before_validation,
    a_burst_of_handshakes_with_one_credential_is_not_limited,
    slow_clients_are_dropped_but_sockets_are_not,
    bearer_header_connects_and_stores_context,
    subprotocol_pair_is_answered_with_bearer_only,
    ticket_connects_once,
    bad_credentials_are_refused_before_upgrade,
    sdk_token_origin_is_the_tenants,
    auth_service_down_is_503,
    silent_peer_is_closed_4408,
);
