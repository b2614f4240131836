//! Revocation: a session ended anywhere closes its sockets with 4409 within 100 ms on every
//! node, and a lost event is caught by re-validation.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use testkit::{Backend, SAFARI, expect_status, spawn_auth, unique_email};

use crate::{
    BusChoice, Ws, connect_bearer, connect_with, context_of, expect_close, expect_refused, ping, spawn_socket,
    spawn_socket_on,
    tickets::{mint, ticket_of},
};

/// A connection opened with a one-time ticket minted from `access`.
async fn connect_ticket(socket: &crate::Socket, app: &testkit::TestApp, access: &str) -> Ws {
    let context = context_of(app, access).await;
    let ticket = ticket_of(mint(socket, &context, ("authorization", format!("Bearer {access}"))).await).await;
    let (ws, _) = connect_with(&format!("{}?ticket={ticket}", socket.ws_url()), &[]).await.expect("ticket connects");
    ws
}

/// Ending a session from another device closes that session's sockets (on both nodes) with
/// 4409 within 100 ms, and only those; its token is refused afterwards.
async fn logout_elsewhere_closes_4409_within_100ms(backend: Backend) {
    let app = spawn_auth(backend).await;
    let one = spawn_socket(&app, &[]).await;
    let two = spawn_socket(&app, &[]).await;
    let email = unique_email("revoke");
    let laptop = app.signup(&email).await;
    let phone = app.login(&email, SAFARI).await;
    let mut phone_one = connect_bearer(&one, &phone.access).await;
    let mut phone_two = connect_bearer(&two, &phone.access).await;
    let mut laptop_ws = connect_bearer(&one, &laptop.access).await;
    for ws in [&mut phone_one, &mut phone_two, &mut laptop_ws] {
        ping(ws).await;
    }

    let started = Instant::now();
    let response = app.delete_auth(&format!("/sessions/{}", phone.session_id), &laptop.access).await;
    let answered = Instant::now();
    assert!(response.status().is_success(), "{}", response.status());
    let (code_one, code_two) = tokio::join!(
        expect_close(&mut phone_one, Duration::from_secs(2)),
        expect_close(&mut phone_two, Duration::from_secs(2))
    );
    let closed = Instant::now();
    assert_eq!((code_one, code_two), (4409, 4409));
    let after_event = closed - answered;
    let since_request = closed - started;
    eprintln!("revocation → close: {after_event:?} after the response, {since_request:?} since the request");
    assert!(since_request <= Duration::from_millis(100), "closed {since_request:?} after the session was ended");

    // The laptop's own session is untouched and now sees the session go on its channel.
    ping(&mut laptop_ws).await;
    let url = one.ws_url();
    let bearer = format!("Bearer {}", phone.access);
    let Err(refused) = crate::connect_with(&url, &[("authorization", &bearer)]).await else {
        panic!("a revoked token opened a socket");
    };
    assert_eq!(refused.status, 401, "{:?}", refused.body);

    // The user's own logout ends the laptop's socket too.
    expect_status(app.post_auth("/logout", &laptop.access, None).await, StatusCode::NO_CONTENT).await;
    assert_eq!(expect_close(&mut laptop_ws, Duration::from_secs(1)).await, 4409);
    assert!(one.metrics().await.contains("socket_revocations_total 2"));
    one.assert_no_1011().await;
    two.assert_no_1011().await;
}

/// A password change ends the other sessions' sockets but keeps the current one; a revoked
/// PAT's socket closes too.
async fn password_change_and_pat_revocation(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let email = unique_email("password");
    let current = app.signup(&email).await;
    let other = app.login(&email, SAFARI).await;
    let mut kept = connect_bearer(&socket, &current.access).await;
    let mut ended = connect_bearer(&socket, &other.access).await;
    let pat = expect_status(
        app.post_auth("/tokens", &current.access, Some(&json!({"name": "cli"}))).await,
        StatusCode::CREATED,
    )
    .await;
    let mut cli = connect_bearer(&socket, pat["token"].as_str().unwrap()).await;
    ping(&mut cli).await;

    let body = json!({"current_password": testkit::PASSWORD, "new_password": "a different horse battery staple"});
    expect_status(app.post_auth("/password", &current.access, Some(&body)).await, StatusCode::NO_CONTENT).await;
    assert_eq!(expect_close(&mut ended, Duration::from_secs(1)).await, 4409);
    ping(&mut kept).await;

    let path = format!("/tokens/{}", pat["id"].as_str().unwrap());
    assert!(app.delete_auth(&path, &current.access).await.status().is_success());
    assert_eq!(expect_close(&mut cli, Duration::from_secs(1)).await, 4409);
    ping(&mut kept).await;
    socket.assert_no_1011().await;
}

/// Events can be lost while the bus reconnects: re-validation then closes what was revoked.
async fn revalidation_catches_lost_events(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket_on(&app, &[], BusChoice::Deaf).await;
    let email = unique_email("lost");
    let stays = app.signup(&email).await;
    let leaves = app.login(&email, SAFARI).await;
    let mut staying = connect_bearer(&socket, &stays.access).await;
    let mut leaving = connect_bearer(&socket, &leaves.access).await;
    expect_status(app.post_auth("/logout", &leaves.access, None).await, StatusCode::NO_CONTENT).await;
    // This node heard nothing: the socket is still open.
    ping(&mut leaving).await;
    assert_eq!(socket.service.revalidate_all().await, 1);
    assert_eq!(expect_close(&mut leaving, Duration::from_secs(1)).await, 4409);
    ping(&mut staying).await;
    expect_refused(&socket.ws_url(), &[("authorization", &format!("Bearer {}", leaves.access))], 401, "token_revoked")
        .await;
}

/// After a bus reconnect every connection is re-checked, those opened with a ticket (which
/// hold no credential) included.
async fn revalidation_after_a_reconnect_covers_ticket_connections(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket_on(&app, &[], BusChoice::Deaf).await;
    let email = unique_email("lost-ticket");
    let stays = app.signup(&email).await;
    let leaves = app.login(&email, SAFARI).await;
    let mut staying = connect_ticket(&socket, &app, &stays.access).await;
    let mut leaving = connect_ticket(&socket, &app, &leaves.access).await;
    ping(&mut staying).await;
    ping(&mut leaving).await;
    expect_status(app.post_auth("/logout", &leaves.access, None).await, StatusCode::NO_CONTENT).await;
    assert_eq!(socket.service.revalidate_all().await, 1);
    assert_eq!(expect_close(&mut leaving, Duration::from_secs(1)).await, 4409);
    ping(&mut staying).await;
}

/// Every connection is re-checked in the background at least every `SOCKET_RECHECK_INTERVAL`,
/// whatever its credential: with every event lost, a logout, a session ended from another
/// device, a revoked PAT and a revoked API key still close their sockets (Bearer and ticket
/// alike) within an interval or two, and the live connection stays open.
async fn background_rechecks_close_what_lost_events_left_open(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket_on(&app, &[("SOCKET_RECHECK_INTERVAL", "1s")], BusChoice::Deaf).await;
    let email = unique_email("recheck");
    let stays = app.signup(&email).await;
    let by_bearer_user = app.login(&email, SAFARI).await;
    let by_ticket_user = app.login(&email, SAFARI).await;
    let (pat_id, pat) = app.create_pat(&stays, json!({"name": "cli"})).await;
    let shop = app.register_client(&stays, json!({"name": "Shop"})).await;

    let mut staying = connect_bearer(&socket, &stays.access).await;
    let mut by_bearer = connect_bearer(&socket, &by_bearer_user.access).await;
    let mut by_ticket = connect_ticket(&socket, &app, &by_ticket_user.access).await;
    let mut by_pat = connect_bearer(&socket, &pat).await;
    let (mut by_key, _) = connect_with(&socket.ws_url(), &[("x-api-key", &shop.key)]).await.expect("key connects");
    for ws in [&mut staying, &mut by_bearer, &mut by_ticket, &mut by_pat, &mut by_key] {
        ping(ws).await;
    }

    expect_status(app.post_auth("/logout", &by_bearer_user.access, None).await, StatusCode::NO_CONTENT).await;
    let ended = app.delete_auth(&format!("/sessions/{}", by_ticket_user.session_id), &stays.access).await;
    assert!(ended.status().is_success(), "{}", ended.status());
    assert!(app.delete_auth(&format!("/tokens/{pat_id}"), &stays.access).await.status().is_success());
    let key_path = format!("/client/{}/api-keys/{}", shop.id, shop.key_id);
    assert_eq!(app.delete_auth(&key_path, &stays.access).await.status(), StatusCode::NO_CONTENT);

    let within = Duration::from_secs(4);
    let codes = tokio::join!(
        expect_close(&mut by_bearer, within),
        expect_close(&mut by_ticket, within),
        expect_close(&mut by_pat, within),
        expect_close(&mut by_key, within),
    );
    assert_eq!(codes, (4409, 4409, 4409, 4409));
    ping(&mut staying).await;
    socket.assert_no_1011().await;
}

testkit::on_both_backends!(
    logout_elsewhere_closes_4409_within_100ms,
    password_change_and_pat_revocation,
    revalidation_catches_lost_events,
    revalidation_after_a_reconnect_covers_ticket_connections,
    background_rechecks_close_what_lost_events_left_open,
);
