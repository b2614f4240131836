//! One connection's life, in the single task that owns its socket: reading client messages,
//! writing what the hub queues, the expiry and heartbeat timers, and the close it ends with.
//! Every permission comes from the context stored at connect (or refresh); no message
//! triggers a token check.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use auth_contract::{AuthContext, ClientError, codes::as_snake};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use serde_json::Value;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::{
    sync::mpsc,
    time::{Instant, sleep_until},
};

use crate::{
    hub::Conn,
    protocol::{
        self, ClientMessage, EXPIRING_NOTICE_SECONDS, MAX_MESSAGE_BYTES, MAX_REFUSED_PER_MINUTE, ServerMessage, close,
    },
    service::{SocketService, Target},
    store::StoredConnection,
};

const MINUTE: Duration = Duration::from_secs(60);
/// Channels one connection may subscribe to.
const MAX_SUBSCRIPTIONS: usize = 100;

/// Messages allowed per minute, in fixed windows.
struct RateLimit {
    per_minute: u32,
    window_start: Instant,
    used: u32,
}

impl RateLimit {
    fn new(per_minute: u32) -> Self {
        Self { per_minute, window_start: Instant::now(), used: 0 }
    }

    fn allow(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= MINUTE {
            self.window_start = now;
            self.used = 0;
        }
        self.used += 1;
        self.used <= self.per_minute
    }
}

/// Refused messages in the last minute; the tenth closes the connection with 4403.
#[derive(Default)]
struct Refusals(VecDeque<Instant>);

impl Refusals {
    /// Records one; `true` when the connection has now been refused too often.
    fn record(&mut self, now: Instant) -> bool {
        while self.0.front().is_some_and(|t| now.duration_since(*t) >= MINUTE) {
            self.0.pop_front();
        }
        self.0.push_back(now);
        self.0.len() >= MAX_REFUSED_PER_MINUTE
    }
}

/// What handling a message led to.
enum Outcome {
    Done,
    Refused,
    Close(u16),
}

fn reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "server shutting down",
        close::POLICY => "protocol misuse",
        close::TOO_BIG => "message too big",
        close::EXPIRED => "token expired",
        close::ABUSE => "too many refused messages",
        close::NO_PONG => "no pong",
        close::SESSION_ENDED => "session ended",
        _ => "internal error",
    }
}

/// Whether a read failed because the message or a frame was over the limit.
fn is_too_big(err: axum::Error) -> bool {
    let inner = err.into_inner();
    match inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) => true,
        Some(_) => false,
        None => inner.to_string().contains("Space limit exceeded"),
    }
}

/// The instant `expires_at` (unix seconds) falls on, by the injected clock.
fn deadline(now_unix_ms: i128, expires_at: i64) -> Instant {
    let left_ms = i128::from(expires_at) * 1000 - now_unix_ms;
    Instant::now() + Duration::from_millis(u64::try_from(left_ms.max(0)).unwrap_or(u64::MAX))
}

struct Session<'a> {
    service: &'a SocketService,
    conn: &'a Arc<Conn>,
    socket: WebSocket,
    limit: RateLimit,
    refusals: Refusals,
    expiring_sent: bool,
    last_seen: Instant,
    /// A write timed out: the peer stopped reading.
    stalled: bool,
}

/// Runs a connection until it closes, then forgets it in the hub and the store.
pub(crate) async fn serve(
    service: SocketService,
    conn: Arc<Conn>,
    mut outbound: mpsc::Receiver<Utf8Bytes>,
    socket: WebSocket,
) {
    let mut session = Session {
        limit: RateLimit::new(service.config().messages_per_minute),
        service: &service,
        conn: &conn,
        socket,
        refusals: Refusals::default(),
        expiring_sent: false,
        last_seen: Instant::now(),
        stalled: false,
    };
    let code = session.drive(&mut outbound).await;
    let code = match code {
        Some(code) => {
            session.close(code).await;
            code
        }
        // The peer closed or went away: 1005 (no status) as far as our metrics go.
        None => 1005,
    };
    service.metrics().closed(code);
    service.hub().unregister(&conn);
    let owner = protocol::own_id(&conn.context()).map(str::to_owned);
    if let Err(err) = service.contexts().remove(&conn.key, owner.as_deref()).await {
        tracing::warn!(error = %err, conn = %conn.key, "connection context not removed; it expires by TTL");
    }
    tracing::debug!(conn = %conn.key, code, "connection closed");
}

impl Session<'_> {
    /// Writes one frame; a peer that has not taken it within `SOCKET_SEND_TIMEOUT` (it stopped
    /// reading, and both kernel buffers are full) counts as gone.
    async fn write(&mut self, frame: Message) -> bool {
        match tokio::time::timeout(self.service.config().send_timeout, self.socket.send(frame)).await {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                self.stalled = true;
                tracing::debug!(conn = %self.conn.key, "peer stopped reading; dropping the connection");
                false
            }
        }
    }

    async fn send(&mut self, message: &ServerMessage<'_>) -> bool {
        self.service.metrics().messages.with_label_values(&["out"]).inc();
        self.write(Message::Text(Utf8Bytes::from(message.to_json()))).await
    }

    async fn error(&mut self, code: &str, message: &str, reference: Option<&Value>) -> bool {
        self.send(&ServerMessage::Error { code, message, reference }).await
    }

    async fn close(&mut self, code: u16) {
        if self.stalled {
            // A close frame would only wait behind the frames the peer never read.
            return;
        }
        let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason(code)) };
        if self.write(Message::Close(Some(frame))).await {
            // Give the peer a moment to answer the close, without waiting on a silent one.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(Ok(message)) = self.socket.recv().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }

    /// Runs until the connection must close (`Some(code)`) or the peer left (`None`).
    async fn drive(&mut self, outbound: &mut mpsc::Receiver<Utf8Bytes>) -> Option<u16> {
        let heartbeat = self.service.config().heartbeat;
        let mut next_ping = Instant::now() + heartbeat;
        loop {
            let context = self.conn.context();
            let now_ms = self.service.inner.deps.clock.now().unix_timestamp_nanos() / 1_000_000;
            let expiry = context.expires_at.map(|exp| deadline(now_ms, exp));
            let notice = context
                .expires_at
                .filter(|_| !self.expiring_sent)
                .map(|exp| deadline(now_ms, exp.saturating_sub(EXPIRING_NOTICE_SECONDS)));
            let wake = [Some(next_ping), expiry, notice].into_iter().flatten().min().unwrap_or(next_ping);
            tokio::select! {
                biased;
                () = self.conn.closing() => return self.conn.close_requested(),
                queued = outbound.recv() => {
                    if let Some(text) = queued {
                        self.service.metrics().messages.with_label_values(&["out"]).inc();
                        if !self.write(Message::Text(text)).await {
                            return None;
                        }
                    }
                }
                incoming = self.socket.recv() => {
                    let incoming = incoming?;
                    let message = match incoming {
                        Ok(message) => message,
                        Err(err) => return is_too_big(err).then_some(close::TOO_BIG),
                    };
                    self.last_seen = Instant::now();
                    match message {
                        Message::Text(text) => match self.on_text(text.as_str()).await {
                            Outcome::Done => {}
                            Outcome::Refused => {
                                if self.refusals.record(Instant::now()) {
                                    return Some(close::ABUSE);
                                }
                            }
                            Outcome::Close(code) => return Some(code),
                        },
                        Message::Binary(_) => return Some(close::POLICY),
                        Message::Close(_) => return None,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                () = sleep_until(wake) => {
                    let now = Instant::now();
                    if expiry.is_some_and(|e| now >= e) {
                        return Some(close::EXPIRED);
                    }
                    if let (Some(at), Some(exp)) = (notice, context.expires_at)
                        && now >= at
                    {
                        self.expiring_sent = true;
                        let expires_in = (exp - self.service.now()).max(0);
                        if !self.send(&ServerMessage::Expiring { expires_in }).await {
                            return None;
                        }
                    }
                    if now >= next_ping {
                        if now.duration_since(self.last_seen) > heartbeat * 2 {
                            return Some(close::NO_PONG);
                        }
                        if !self.write(Message::Ping(Default::default())).await {
                            return None;
                        }
                        let owner = protocol::own_id(&context);
                        if let Err(err) = self.service.contexts().touch(&self.conn.key, owner, heartbeat * 3).await {
                            tracing::warn!(error = %err, "connection context TTL not refreshed");
                        }
                        next_ping = now + heartbeat;
                    }
                }
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Outcome {
        self.service.metrics().messages.with_label_values(&["in"]).inc();
        if text.len() > MAX_MESSAGE_BYTES {
            return Outcome::Close(close::TOO_BIG);
        }
        if !self.limit.allow(Instant::now()) {
            let limit = self.limit.per_minute;
            let message = format!("more than {limit} messages in a minute");
            return self.refuse("rate_limited", &message, None).await;
        }
        let (message, reference) = match protocol::parse(text) {
            Ok(parsed) => parsed,
            Err(err) => return self.refuse(err.code, &err.message, err.reference.as_ref()).await,
        };
        let reference = reference.as_ref();
        let context = self.conn.context();
        match message {
            ClientMessage::Ping => self.reply(&ServerMessage::Pong { reference }).await,
            ClientMessage::Subscribe { channel } => {
                if !protocol::may_use(&context, &channel) {
                    return self.refuse("forbidden", "this channel is not yours", reference).await;
                }
                if self.service.hub().subscriptions(self.conn) >= MAX_SUBSCRIPTIONS {
                    return self.refuse("too_many_subscriptions", "unsubscribe from a channel first", reference).await;
                }
                self.service.hub().subscribe(self.conn, &channel);
                Outcome::Done
            }
            ClientMessage::Unsubscribe { channel } => {
                self.service.hub().unsubscribe(self.conn, &channel);
                Outcome::Done
            }
            ClientMessage::Publish { channel, data } => {
                if !context.has_scope("socket:publish") {
                    return self
                        .refuse("insufficient_scope", "publishing needs the scope socket:publish", reference)
                        .await;
                }
                if !protocol::may_use(&context, &channel) {
                    return self.refuse("forbidden", "this channel is not yours", reference).await;
                }
                match self.service.publish(Target::Channel(channel), data).await {
                    Ok(()) => Outcome::Done,
                    Err(err) => {
                        tracing::warn!(error = %err, "publish failed");
                        self.reply(&ServerMessage::Error {
                            code: "unavailable",
                            message: "publishing is unavailable; retry later",
                            reference,
                        })
                        .await
                    }
                }
            }
            ClientMessage::Refresh { refresh_token } => self.refresh(&context, &refresh_token, reference).await,
        }
    }

    async fn reply(&mut self, message: &ServerMessage<'_>) -> Outcome {
        if self.send(message).await { Outcome::Done } else { Outcome::Close(close::GOING_AWAY) }
    }

    async fn refuse(&mut self, code: &str, message: &str, reference: Option<&Value>) -> Outcome {
        if self.error(code, message, reference).await { Outcome::Refused } else { Outcome::Close(close::GOING_AWAY) }
    }

    /// `auth.refresh`: rotates the refresh token through the auth service and adopts the new
    /// context, which must describe the same identity and session as the old one.
    async fn refresh(&mut self, current: &AuthContext, refresh_token: &str, reference: Option<&Value>) -> Outcome {
        // The auth service refuses another session's token before rotating it.
        let request = auth_contract::proto::RefreshRequest {
            refresh_token: refresh_token.to_owned(),
            expected_session_id: current.session_id.clone().unwrap_or_default(),
            ip: self.conn.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            user_agent: String::new(),
        };
        let refreshed = match self.service.auth().refresh(request).await {
            Ok(refreshed) => refreshed,
            Err(ClientError::Denied { code, message }) => {
                return self.reply(&ServerMessage::Error { code: as_snake(code), message: &message, reference }).await;
            }
            Err(ClientError::Unavailable(_)) => {
                let message = "the auth service is unavailable; retry the refresh";
                return self.reply(&ServerMessage::Error { code: "unavailable", message, reference }).await;
            }
        };
        let context = &refreshed.context;
        let same_identity = context.kind == current.kind
            && context.subject == current.subject
            && context.tenant_id == current.tenant_id
            && (current.session_id.is_none() || context.session_id == current.session_id);
        if !same_identity {
            let message = "the refresh token belongs to another session";
            return self.refuse("forbidden", message, reference).await;
        }
        let context = Arc::new(refreshed.context.clone());
        self.service.hub().update(self.conn, context.clone());
        self.expiring_sent = false;
        let stored = StoredConnection {
            id: self.conn.key.clone(),
            node: self.service.inner.node.clone(),
            context: (*context).clone(),
            connected_at: self.conn.connected_at,
        };
        let ttl = self.service.config().heartbeat * 3;
        if let Err(err) = self.service.contexts().put(&stored, ttl).await {
            tracing::warn!(error = %err, "refreshed context not stored");
        }
        let expires_at = OffsetDateTime::from_unix_timestamp(refreshed.expires_at())
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        self.reply(&ServerMessage::Refreshed {
            access_token: &refreshed.access_token,
            refresh_token: &refreshed.refresh_token,
            expires_at,
            reference,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_per_minute() {
        let start = Instant::now();
        let mut limit = RateLimit { per_minute: 3, window_start: start, used: 0 };
        assert!((0..3).all(|_| limit.allow(start)));
        assert!(!limit.allow(start + Duration::from_secs(10)));
        assert!(limit.allow(start + Duration::from_secs(61)));
    }

    #[test]
    fn ten_refusals_in_a_minute_are_abuse() {
        let start = Instant::now();
        let mut refusals = Refusals::default();
        for i in 0..9 {
            assert!(!refusals.record(start + Duration::from_secs(i)));
        }
        assert!(!refusals.record(start + Duration::from_secs(70)), "old refusals are forgotten");
        let mut burst = Refusals::default();
        assert!((0..10).map(|_| burst.record(start)).last().unwrap_or(false));
    }
}
