//! No connection outlives its credential (SPEC §7): tickets are minted only from a credential
//! the auth service has just validated and hold its full context (API keys included); a
//! ticket is checked against the node's recent revocations when it is redeemed; the
//! `service` kind never connects on the public `/ws`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Backend, expect_status, spawn_auth, unique_email};

use crate::{
    Socket, connect_with, context_of, expect_close, expect_refused, ping, service_token, signed, spawn_socket,
};

/// A ticket as the gateway asks for one: the signed context and the caller's credential.
pub(crate) async fn mint(
    socket: &Socket,
    context: &auth_contract::AuthContext,
    credential: (&'static str, String),
) -> reqwest::Response {
    let mut headers = signed(context, "/ticket");
    headers.insert(reqwest::header::HeaderName::from_static(credential.0), credential.1.parse().unwrap());
    socket.http.post(socket.url("/ticket")).headers(headers).send().await.unwrap()
}

pub(crate) async fn ticket_of(response: reqwest::Response) -> String {
    let body: Value = expect_status(response, StatusCode::OK).await;
    body["ticket"].as_str().expect("ticket").to_owned()
}

/// With the auth service down there is no ticket: the signed context alone has no expiry and
/// no credential to revoke, so minting fails closed with 503.
async fn no_ticket_while_the_auth_service_is_down(backend: Backend) {
    let mut app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let user = app.signup(&unique_email("ticket-down")).await;
    let context = context_of(&app, &user.access).await;
    app.stop().await;
    let response = mint(&socket, &context, ("authorization", format!("Bearer {}", user.access))).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{}", response.text().await.unwrap());
}

/// A ticket whose session ended before it was redeemed is refused at redemption.
async fn a_ticket_redeemed_after_its_revocation_is_refused(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let user = app.signup(&unique_email("ticket-revoked")).await;
    let context = context_of(&app, &user.access).await;
    let ticket = ticket_of(mint(&socket, &context, ("authorization", format!("Bearer {}", user.access))).await).await;
    expect_status(app.post_auth("/logout", &user.access, None).await, StatusCode::NO_CONTENT).await;
    // Give the node its event (the ring must have it; nothing else is waited for).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = format!("{}?ticket={ticket}", socket.ws_url());
    expect_refused(&url, &[], 401, "token_revoked").await;
}

/// An API key's ticket holds the key's credential id: revoking the key closes the socket.
async fn an_api_key_ticket_closes_when_the_key_is_revoked(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let owner = app.signup(&unique_email("ticket-key")).await;
    let shop = app.register_client(&owner, json!({"name": "Shop"})).await;
    let context = app.contract_client().validate_api_key(&shop.key, None, None).await.expect("valid key");
    let signed_context = auth_contract::AuthContext { credential_id: None, ..(*context).clone() };
    let ticket = ticket_of(mint(&socket, &signed_context, ("x-api-key", shop.key.clone())).await).await;
    let (mut ws, _) = connect_with(&format!("{}?ticket={ticket}", socket.ws_url()), &[]).await.expect("connected");
    ping(&mut ws).await;
    let path = format!("/client/{}/api-keys/{}", shop.id, shop.key_id);
    assert_eq!(app.delete_auth(&path, &owner.access).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(expect_close(&mut ws, Duration::from_secs(2)).await, 4409);
}

/// Services call the socket service's `/internal/publish`; they never hold a public socket.
async fn service_tokens_are_refused_on_ws(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let token = service_token(&app).await;
    expect_refused(&socket.ws_url(), &[("authorization", &format!("Bearer {token}"))], 403, "forbidden").await;
}

testkit::on_both_backends!(
    no_ticket_while_the_auth_service_is_down,
    a_ticket_redeemed_after_its_revocation_is_refused,
    an_api_key_ticket_closes_when_the_key_is_revoked,
    service_tokens_are_refused_on_ws,
);
