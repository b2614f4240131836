//! Token lifetime on an open socket: `auth.expiring`, refresh over the socket (which updates
//! the stored context and the expiry timer), and 4401 when the token expires unrefreshed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use testkit::{Backend, spawn_auth_with, unique_email};

use crate::{connect_bearer, expect_close, next_json, ping, send, spawn_socket, sync_clock};

const LIFETIME: &str = "5s";

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

async fn sleep_until_unix(at: f64) {
    let left = at - now_secs();
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
}

/// Without a refresh the socket is warned, then closed with 4401 when the token expires.
async fn expiry_closes_4401(backend: Backend) {
    let app = spawn_auth_with(backend, &[("JWT_EXPIRES_IN", LIFETIME)]).await;
    let socket = spawn_socket(&app, &[]).await;
    sync_clock(&app);
    let user = app.signup(&unique_email("expiry")).await;
    let mut ws = connect_bearer(&socket, &user.access).await;
    let expiring = next_json(&mut ws).await;
    assert_eq!(expiring["type"], "auth.expiring");
    let expires_in = expiring["expires_in"].as_i64().unwrap();
    assert!((0..=5).contains(&expires_in), "{expiring}");
    let exp = socket.service.contexts().get(&socket.stored_for(&user.user_id).await[0]).await.unwrap().unwrap();
    let exp = exp.context.expires_at.unwrap() as f64;
    assert_eq!(expect_close(&mut ws, Duration::from_secs(8)).await, 4401);
    let late = now_secs() - exp;
    assert!((-0.2..1.0).contains(&late), "closed {late:.2}s from the expiry");
    socket.assert_no_1011().await;
}

/// `auth.refresh` rotates the tokens, updates the stored context and moves the expiry: the
/// socket outlives the first token and closes only when the refreshed one expires.
async fn refresh_over_socket_extends_connection(backend: Backend) {
    let app = spawn_auth_with(backend, &[("JWT_EXPIRES_IN", LIFETIME)]).await;
    let socket = spawn_socket(&app, &[]).await;
    sync_clock(&app);
    let user = app.signup(&unique_email("refresh")).await;
    let mut ws = connect_bearer(&socket, &user.access).await;
    assert_eq!(next_json(&mut ws).await["type"], "auth.expiring");
    let id = socket.stored_for(&user.user_id).await.remove(0);
    let first = socket.service.contexts().get(&id).await.unwrap().unwrap().context;
    let first_exp = first.expires_at.unwrap();

    // Refresh 2.5 s before the first token expires, with the auth service's clock on time.
    sleep_until_unix(first_exp as f64 - 2.5).await;
    sync_clock(&app);
    send(&mut ws, json!({"type": "auth.refresh", "refresh_token": user.refresh, "ref": "r"})).await;
    let refreshed = next_json(&mut ws).await;
    assert_eq!(refreshed["type"], "auth.refreshed", "{refreshed}");
    assert_eq!(refreshed["ref"], "r");
    let access = refreshed["access_token"].as_str().unwrap();
    assert_ne!(access, user.access);
    assert!(refreshed["refresh_token"].as_str().unwrap().starts_with("pcr_"));
    let expires_at = time::OffsetDateTime::parse(
        refreshed["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!(expires_at > first_exp, "{expires_at} vs {first_exp}");

    let stored = socket.service.contexts().get(&id).await.unwrap().unwrap().context;
    assert_eq!(stored.expires_at, Some(expires_at), "the stored context follows the refresh");
    assert_ne!(stored.credential_id, first.credential_id);
    assert_eq!(stored.session_id, first.session_id);

    // Past the first token's expiry the socket is still open (a new warning may come first).
    sleep_until_unix(first_exp as f64 + 0.5).await;
    send(&mut ws, json!({"type": "ping", "ref": "alive"})).await;
    loop {
        let message = next_json(&mut ws).await;
        if message["type"] == "pong" {
            break;
        }
        assert_eq!(message["type"], "auth.expiring", "{message}");
    }
    // And the refreshed one expires on schedule.
    assert_eq!(expect_close(&mut ws, Duration::from_secs(8)).await, 4401);
    assert!(now_secs() >= expires_at as f64 - 0.2);
    socket.assert_no_1011().await;
}

/// A refresh token that is not valid gets `error`, and the socket stays open.
async fn bad_refresh_is_an_error(backend: Backend) {
    let app = spawn_auth_with(backend, &[]).await;
    let socket = spawn_socket(&app, &[]).await;
    let user = app.signup(&unique_email("bad-refresh")).await;
    let mut ws = connect_bearer(&socket, &user.access).await;
    send(&mut ws, json!({"type": "auth.refresh", "refresh_token": "pcr_nope"})).await;
    let error = next_json(&mut ws).await;
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some("refresh_invalid")), "{error}");
    ping(&mut ws).await;
    socket.assert_no_1011().await;
}

/// `auth.refresh` with another session's refresh token is refused before anything is
/// rotated: that other device keeps its refresh token (SPEC §7; the socket names its session
/// in `RefreshRequest`).
async fn another_sessions_refresh_token_is_refused_unspent(backend: Backend) {
    let app = spawn_auth_with(backend, &[]).await;
    let socket = spawn_socket(&app, &[]).await;
    let email = unique_email("two-devices");
    let laptop = app.signup(&email).await;
    let phone = app.login(&email, testkit::SAFARI).await;
    let mut ws = connect_bearer(&socket, &laptop.access).await;
    ping(&mut ws).await;
    send(&mut ws, json!({"type": "auth.refresh", "refresh_token": phone.refresh, "ref": "r1"})).await;
    let error = loop {
        let message = next_json(&mut ws).await;
        if message["type"] == "error" {
            break message;
        }
    };
    assert_eq!(error["code"], "forbidden", "{error}");
    // The phone's token was not spent: it rotates normally.
    let rotated = app.refresh(&phone.refresh).await;
    assert_eq!(rotated.status(), reqwest::StatusCode::OK, "{}", rotated.text().await.unwrap());
}

/// A ticket minted with the caller's token alongside the signed context (as the gateway
/// forwards it) carries that token's expiry: the connection is warned and closed with 4401
/// like a Bearer one. A token of someone else next to the signed context gets no ticket.
async fn ticket_connection_expires_with_its_token(backend: Backend) {
    let app = spawn_auth_with(backend, &[("JWT_EXPIRES_IN", LIFETIME)]).await;
    let socket = spawn_socket(&app, &[]).await;
    sync_clock(&app);
    let user = app.signup(&unique_email("ticket-expiry")).await;
    let context = crate::context_of(&app, &user.access).await;
    let mut headers = crate::signed(&context, "/ticket");
    headers.insert("authorization", format!("Bearer {}", user.access).parse().unwrap());
    let minted = socket.http.post(socket.url("/ticket")).headers(headers).send().await.unwrap();
    let minted: serde_json::Value = testkit::expect_status(minted, reqwest::StatusCode::OK).await;
    let url = format!("{}?ticket={}", socket.ws_url(), minted["ticket"].as_str().unwrap());
    let (mut ws, _) = crate::connect_with(&url, &[]).await.expect("ticket accepted");
    let expiring = next_json(&mut ws).await;
    assert_eq!(expiring["type"], "auth.expiring", "{expiring}");
    assert_eq!(expect_close(&mut ws, Duration::from_secs(8)).await, 4401);

    let other = app.signup(&unique_email("ticket-other")).await;
    let mut mixed = crate::signed(&context, "/ticket");
    mixed.insert("authorization", format!("Bearer {}", other.access).parse().unwrap());
    let refused = socket.http.post(socket.url("/ticket")).headers(mixed).send().await.unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    socket.assert_no_1011().await;
}

testkit::on_both_backends!(
    another_sessions_refresh_token_is_refused_unspent,
    expiry_closes_4401,
    refresh_over_socket_extends_connection,
    bad_refresh_is_an_error,
    ticket_connection_expires_with_its_token
);
