//! The message protocol's limits: forbidden subscriptions and publishes, the 64 KiB limit,
//! the per-connection rate limit and abuse, malformed and binary messages, graceful shutdown.

use std::time::Duration;

use futures::SinkExt;
use reqwest::StatusCode;
use serde_json::json;
use testkit::{Backend, expect_status, spawn_auth, unique_email};
use tokio_tungstenite::tungstenite::Message;

use crate::{connect_bearer, expect_close, expect_silence, next_json, ping, send, service_token, spawn_socket};

/// Someone else's user channel and a foreign tenant are refused with `error`, and nothing
/// published there arrives; a publish without `socket:publish` is refused too.
async fn forbidden_subscribe_gets_error_and_no_data(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let alice = app.signup(&unique_email("alice")).await;
    let bob = app.signup(&unique_email("bob")).await;
    let mut a = connect_bearer(&socket, &alice.access).await;
    let mut b = connect_bearer(&socket, &bob.access).await;

    for channel in [format!("user:{}", bob.user_id), "tenant:acme:news".to_owned(), "global".to_owned()] {
        send(&mut a, json!({"type": "subscribe", "channel": channel, "ref": channel})).await;
        let error = next_json(&mut a).await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], "forbidden");
        assert_eq!(error["ref"], json!(channel));
    }
    // Publishing on someone else's channel is refused as well.
    send(&mut a, json!({"type": "publish", "channel": format!("user:{}", bob.user_id), "data": "hi"})).await;
    assert_eq!(next_json(&mut a).await["code"], "forbidden");

    let token = service_token(&app).await;
    let response = socket
        .http
        .post(socket.url("/internal/publish"))
        .bearer_auth(&token)
        .json(&json!({"user_id": bob.user_id, "data": {"secret": "for bob"}}))
        .send()
        .await
        .unwrap();
    expect_status(response, StatusCode::ACCEPTED).await;
    let got = next_json(&mut b).await;
    assert_eq!(
        got,
        json!({"type": "message", "channel": format!("user:{}", bob.user_id), "data": {"secret": "for bob"}})
    );
    expect_silence(&mut a, Duration::from_millis(300)).await;

    // A PAT without socket:publish may not publish, even on its own channel.
    let pat = expect_status(
        app.post_auth("/tokens", &alice.access, Some(&json!({"name": "ro", "scopes": ["repos:read"]}))).await,
        StatusCode::CREATED,
    )
    .await;
    let mut p = connect_bearer(&socket, pat["token"].as_str().unwrap()).await;
    send(&mut p, json!({"type": "publish", "channel": format!("user:{}", alice.user_id), "data": 1})).await;
    assert_eq!(next_json(&mut p).await["code"], "insufficient_scope");
    // The user's own token (scope `*`) may publish on its own channel, reaching its devices.
    send(&mut a, json!({"type": "publish", "channel": format!("user:{}", alice.user_id), "data": {"n": 1}})).await;
    let echoed = next_json(&mut p).await;
    assert_eq!(echoed["data"], json!({"n": 1}));
    socket.assert_no_1011().await;
}

/// A message over 64 KiB closes the socket with 1009.
async fn oversized_message_closes_1009(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let user = app.signup(&unique_email("big")).await;
    let mut ws = connect_bearer(&socket, &user.access).await;
    // Exactly at the limit is fine.
    let padding = "x".repeat(64 * 1024 - 40);
    send(&mut ws, json!({"type": "ping", "pad": padding})).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    let big = "x".repeat(70 * 1024);
    send(&mut ws, json!({"type": "ping", "pad": big})).await;
    assert_eq!(expect_close(&mut ws, Duration::from_secs(3)).await, 1009);
    socket.assert_no_1011().await;
}

/// Past `SOCKET_MESSAGES_PER_MINUTE` each message gets `rate_limited`; the tenth refusal
/// closes with 4403.
async fn flood_is_rate_limited_then_closed(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[("SOCKET_MESSAGES_PER_MINUTE", "5")]).await;
    let user = app.signup(&unique_email("flood")).await;
    let mut ws = connect_bearer(&socket, &user.access).await;
    for _ in 0..20 {
        // The server may close mid-flood; later sends may fail.
        if ws.send(Message::Text(json!({"type": "ping"}).to_string().into())).await.is_err() {
            break;
        }
    }
    let (mut pongs, mut limited) = (0, 0);
    let code = loop {
        match crate::next(&mut ws, Duration::from_secs(3)).await {
            Some(crate::Got::Json(message)) if message["type"] == "pong" => pongs += 1,
            Some(crate::Got::Json(message)) => {
                assert_eq!((message["type"].as_str(), message["code"].as_str()), (Some("error"), Some("rate_limited")));
                limited += 1;
            }
            Some(crate::Got::Closed(code)) => break code,
            None => panic!("no close after the flood"),
        }
    };
    assert_eq!((pongs, limited, code), (5, 10, Some(4403)));
    socket.assert_no_1011().await;
}

/// Malformed JSON and unknown types get `error`; repeated, they count as abuse. Binary frames
/// are protocol misuse (1008).
async fn malformed_and_binary_messages(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let user = app.signup(&unique_email("malformed")).await;
    let mut ws = connect_bearer(&socket, &user.access).await;
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["code"], "malformed_message");
    send(&mut ws, json!({"type": "shout", "ref": "r1"})).await;
    let error = next_json(&mut ws).await;
    assert_eq!((error["code"].as_str(), &error["ref"]), (Some("unknown_type"), &json!("r1")));
    for _ in 0..8 {
        send(&mut ws, json!({"type": "shout"})).await;
    }
    assert_eq!(expect_close(&mut ws, Duration::from_secs(3)).await, 4403);

    let mut ws = connect_bearer(&socket, &user.access).await;
    ping(&mut ws).await;
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(expect_close(&mut ws, Duration::from_secs(3)).await, 1008);
    socket.assert_no_1011().await;
}

/// Graceful shutdown closes every connection with 1001.
async fn shutdown_closes_1001(backend: Backend) {
    let app = spawn_auth(backend).await;
    let mut socket = spawn_socket(&app, &[]).await;
    let user = app.signup(&unique_email("shutdown")).await;
    let mut a = connect_bearer(&socket, &user.access).await;
    let mut b = connect_bearer(&socket, &user.access).await;
    ping(&mut a).await;
    ping(&mut b).await;
    let (_, code_a, code_b) = tokio::join!(
        socket.stop(),
        expect_close(&mut a, Duration::from_secs(5)),
        expect_close(&mut b, Duration::from_secs(5))
    );
    assert_eq!((code_a, code_b), (1001, 1001));
}

/// A peer that stops reading while messages keep coming is closed after
/// `SOCKET_SEND_TIMEOUT`, instead of blocking its connection's task (and keeping its context
/// registered) for ever.
async fn a_peer_that_stops_reading_is_closed_after_the_send_timeout(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[("SOCKET_SEND_TIMEOUT", "300ms")]).await;
    let user = app.signup(&unique_email("stalled")).await;
    let mut ws = connect_bearer(&socket, &user.access).await;
    ping(&mut ws).await;
    assert_eq!(socket.stored_for(&user.user_id).await.len(), 1);
    // From here on the client reads nothing; the server's writes fill both kernel buffers.
    let token = service_token(&app).await;
    let data = "x".repeat(48 * 1024);
    let body = json!({"user_id": user.user_id, "data": data});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response =
            socket.http.post(socket.url("/internal/publish")).bearer_auth(&token).json(&body).send().await.unwrap();
        expect_status(response, StatusCode::ACCEPTED).await;
        if socket.stored_for(&user.user_id).await.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a peer that reads nothing is still connected");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(ws);
    socket.assert_no_1011().await;
}

testkit::on_both_backends!(
    a_peer_that_stops_reading_is_closed_after_the_send_timeout,
    forbidden_subscribe_gets_error_and_no_data,
    oversized_message_closes_1009,
    flood_is_rate_limited_then_closed,
    malformed_and_binary_messages,
    shutdown_closes_1001,
);
