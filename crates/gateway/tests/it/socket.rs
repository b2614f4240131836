//! The socket service through the gateway: a ticket minted with `POST /v1/socket/ticket`
//! (the gateway signs the context for the socket service's `/ticket`), then the WebSocket
//! upgrade at `/v1/socket` spliced through to `/ws`, and a logout elsewhere closing it with
//! 4409 across both hops.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use platform::env::MapEnv;
use reqwest::StatusCode;
use socket_service::{Deps, Mode, SocketConfig, SocketService};
use testkit::{Backend, CONTEXT_SECRET, SERVICE_SECRET, expect_status, unique_email};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

use crate::harness::{spawn_auth, spawn_gateway};

async fn spawn_socket(auth: &testkit::TestApp) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let mut env = MapEnv::new([
        ("AUTH_SERVICE_URL", auth.grpc.as_str()),
        ("SERVICE_SECRET", SERVICE_SECRET),
        ("CONTEXT_SIGNING_SECRET", CONTEXT_SECRET),
    ]);
    if let Some((url, prefix)) = &auth.redis {
        env.set("REDIS_URL", url.clone());
        env.set("REDIS_KEY_PREFIX", prefix.clone());
    }
    let config = SocketConfig::from_env(&env, Mode::Embedded).unwrap();
    let deps = match &auth.redis {
        Some((url, prefix)) => Deps::redis(url, prefix).await.unwrap(),
        None => Deps::in_memory(auth.bus.clone()),
    };
    let service = SocketService::new(config, deps).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(socket_service::run(service, listener, async move {
        let _ = rx.await;
    }));
    for _ in 0..100 {
        if reqwest::get(format!("http://{addr}/health")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (addr, tx)
}

async fn websocket_through_the_gateway_with_a_ticket(backend: Backend) {
    let auth = spawn_auth(backend).await;
    let (socket_addr, _stop) = spawn_socket(&auth).await;
    let socket_url = format!("http://{socket_addr}");
    let gw = spawn_gateway(&auth, "", &[("SOCKET_SERVICE_URL", &socket_url)]).await;
    let user = auth.signup(&unique_email("gw-socket")).await;

    let minted =
        reqwest::Client::new().post(gw.at("/v1/socket/ticket")).bearer_auth(&user.access).send().await.unwrap();
    let minted = expect_status(minted, StatusCode::OK).await;
    let ticket = minted["ticket"].as_str().expect("ticket").to_owned();
    assert_eq!(minted["expires_in"], serde_json::json!(30));

    let ws_url = format!("{}/v1/socket?ticket={ticket}", gw.url.replace("http://", "ws://"));
    let (mut ws, response) = tokio_tungstenite::connect_async(&ws_url).await.expect("upgrade through the gateway");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(2), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(pong.to_text().unwrap().contains("pong"), "{pong:?}");

    // The ticket was spent: a second upgrade with it is refused before any socket exists.
    let reused = tokio_tungstenite::connect_async(&ws_url).await;
    match reused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("a reused ticket must get 401, got {other:?}"),
    }

    // Logging out elsewhere closes the socket with 4409, through the gateway's splice.
    assert!(auth.post_auth("/logout", &user.access, None).await.status().is_success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.expect("closed in time");
        match frame {
            Some(Ok(Message::Close(Some(close)))) => {
                assert_eq!(close.code, CloseCode::Library(4409));
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a 4409 close, got {other:?}"),
        }
    }
}

testkit::on_both_backends!(websocket_through_the_gateway_with_a_ticket);
