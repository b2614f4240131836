//! `POST /internal/publish` across socket nodes, and cross-device sync of account events.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{Backend, FIREFOX, SAFARI, expect_problem, expect_status, spawn_auth, unique_email};

use crate::{connect_bearer, expect_silence, next_json, ping, service_token, spawn_socket};

/// A publish to a user reaches every connection of that user on both nodes, whichever node
/// received it, and nobody else.
async fn publish_to_user_reaches_every_node(backend: Backend) {
    let app = spawn_auth(backend).await;
    let one = spawn_socket(&app, &[]).await;
    let two = spawn_socket(&app, &[]).await;
    let email = unique_email("fanout");
    let laptop = app.signup(&email).await;
    let phone = app.login(&email, SAFARI).await;
    let stranger = app.signup(&unique_email("stranger")).await;
    let mut on_one = connect_bearer(&one, &laptop.access).await;
    let mut on_two = connect_bearer(&two, &phone.access).await;
    let mut also_on_two = connect_bearer(&two, &laptop.access).await;
    let mut other = connect_bearer(&one, &stranger.access).await;
    for ws in [&mut on_one, &mut on_two, &mut also_on_two, &mut other] {
        ping(ws).await;
    }
    // Drain account events from the logins above, so only the publish is left to read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for ws in [&mut on_one, &mut on_two, &mut also_on_two] {
        while let Some(crate::Got::Json(_)) = crate::next(ws, Duration::from_millis(100)).await {}
    }

    let token = service_token(&app).await;
    let body = json!({"user_id": laptop.user_id, "data": {"order": 42}});
    let response = one.http.post(one.url("/internal/publish")).bearer_auth(&token).json(&body).send().await.unwrap();
    expect_status(response, StatusCode::ACCEPTED).await;
    let expected = json!({"type": "message", "channel": format!("user:{}", laptop.user_id), "data": {"order": 42}});
    for ws in [&mut on_one, &mut on_two, &mut also_on_two] {
        assert_eq!(next_json(ws).await, expected);
    }
    expect_silence(&mut other, Duration::from_millis(300)).await;

    // The other node accepts publishes too, to a channel its subscribers hold on both nodes.
    crate::send(&mut on_one, json!({"type": "subscribe", "channel": format!("user:{}", laptop.user_id)})).await;
    ping(&mut on_one).await;
    let body = json!({"channel": format!("user:{}", laptop.user_id), "data": "again"});
    let response = two.http.post(two.url("/internal/publish")).bearer_auth(&token).json(&body).send().await.unwrap();
    expect_status(response, StatusCode::ACCEPTED).await;
    assert_eq!(next_json(&mut on_one).await["data"], "again");
    // Subscribed and owner at once: still one copy.
    expect_silence(&mut on_one, Duration::from_millis(200)).await;
    assert_eq!(next_json(&mut on_two).await["data"], "again");
    one.assert_no_1011().await;
    two.assert_no_1011().await;
}

/// Only a service token may publish, with a well-formed body.
async fn internal_publish_is_for_services_only(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let user = app.signup(&unique_email("not-a-service")).await;
    let url = socket.url("/internal/publish");
    let body = json!({"user_id": user.user_id, "data": 1});
    expect_problem(socket.http.post(&url).json(&body).send().await.unwrap(), 401, "token_missing").await;
    expect_problem(
        socket.http.post(&url).bearer_auth("pcs_nope").json(&body).send().await.unwrap(),
        401,
        "token_invalid",
    )
    .await;
    expect_problem(
        socket.http.post(&url).bearer_auth(&user.access).json(&body).send().await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    let token = service_token(&app).await;
    for (bad, status, code) in [
        (json!({"data": 1}), 422, "validation_failed"),
        (json!({"user_id": "a", "tenant_id": "b", "data": 1}), 422, "validation_failed"),
        (json!({"user_id": 7, "data": 1}), 400, "malformed_body"),
        (json!({"user_id": "a"}), 400, "malformed_body"),
        (json!([1, 2]), 400, "malformed_body"),
    ] {
        let response = socket.http.post(&url).bearer_auth(&token).json(&bad).send().await.unwrap();
        expect_problem(response, status, code).await;
    }
    let response = socket.http.post(&url).bearer_auth(&token).body("{}").send().await.unwrap();
    expect_problem(response, 415, "unsupported_media_type").await;
    let huge = json!({"user_id": "a", "data": "x".repeat(70 * 1024)});
    expect_problem(socket.http.post(&url).bearer_auth(&token).json(&huge).send().await.unwrap(), 413, "body_too_large")
        .await;
}

/// Another device's login shows up on the user's own channel.
async fn login_elsewhere_appears_on_user_channel(backend: Backend) {
    let app = spawn_auth(backend).await;
    let socket = spawn_socket(&app, &[]).await;
    let email = unique_email("sync");
    let laptop = app.signup(&email).await;
    let mut ws = connect_bearer(&socket, &laptop.access).await;
    ping(&mut ws).await;
    let phone = app.login(&email, FIREFOX).await;
    let channel = format!("user:{}", laptop.user_id);
    let mut seen: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !seen.iter().any(|e| e["event"] == "auth:user.login") {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match crate::next(&mut ws, left).await {
            Some(crate::Got::Json(message)) => {
                assert_eq!(
                    (message["type"].as_str(), message["channel"].as_str()),
                    (Some("message"), Some(channel.as_str()))
                );
                seen.push(message["data"].clone());
            }
            other => panic!("no login event on {channel}: {other:?} after {seen:?}"),
        }
    }
    let login = seen.iter().find(|e| e["event"] == "auth:user.login").unwrap();
    assert_eq!(login["session_id"], json!(phone.session_id));
    assert_eq!(login["user_id"], json!(laptop.user_id));
    socket.assert_no_1011().await;
}

testkit::on_both_backends!(
    publish_to_user_reaches_every_node,
    internal_publish_is_for_services_only,
    login_elsewhere_appears_on_user_channel,
);
