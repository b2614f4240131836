//! The JSON protocol spoken over the socket (SPEC §7): what clients send, what the server
//! answers, the close codes, and the channel names and permissions.

use auth_contract::{AuthContext, Kind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest accepted message or frame; past it the socket closes with [`close::TOO_BIG`].
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// `auth.expiring` is sent this many seconds before the credential expires.
pub const EXPIRING_NOTICE_SECONDS: i64 = 60;
/// Refused messages (rate-limited, forbidden or malformed) tolerated per minute.
pub const MAX_REFUSED_PER_MINUTE: usize = 10;
/// Longest accepted channel name.
pub const MAX_CHANNEL_BYTES: usize = 256;

/// Close codes (SPEC §7). 1011 (internal error) is never sent on an auth path, so it has no
/// constant here.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const EXPIRED: u16 = 4401;
    pub const ABUSE: u16 = 4403;
    pub const NO_PONG: u16 = 4408;
    pub const SESSION_ENDED: u16 = 4409;
}

/// A message from the client, after its `type` was recognised.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Refresh { refresh_token: String },
    Subscribe { channel: String },
    Unsubscribe { channel: String },
    Publish { channel: String, data: Value },
    Ping,
}

/// Why a client message could not be understood; answered with `error` and counted as a
/// refused message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub code: &'static str,
    pub message: String,
    /// The client's `ref`, when the message was at least a JSON object.
    pub reference: Option<Value>,
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

#[derive(Deserialize)]
struct ChannelBody {
    channel: String,
}

#[derive(Deserialize)]
struct PublishBody {
    channel: String,
    #[serde(default)]
    data: Value,
}

/// Parses one text message into the message and the client's optional `ref` (any JSON value,
/// echoed in replies so a client can match them to its requests).
pub fn parse(text: &str) -> Result<(ClientMessage, Option<Value>), ParseError> {
    let value: Value = serde_json::from_str(text).map_err(|_| ParseError {
        code: "malformed_message",
        message: "a message must be a JSON object with a `type`".to_owned(),
        reference: None,
    })?;
    let Value::Object(object) = value else {
        return Err(ParseError {
            code: "malformed_message",
            message: "a message must be a JSON object with a `type`".to_owned(),
            reference: None,
        });
    };
    let reference = object.get("ref").cloned();
    let invalid = |message: String| ParseError { code: "malformed_message", message, reference: reference.clone() };
    let kind = object.get("type").and_then(Value::as_str).map(str::to_owned);
    let body = Value::Object(object);
    let message = match kind.as_deref() {
        Some("auth.refresh") => {
            let b: RefreshBody = serde_json::from_value(body)
                .map_err(|_| invalid("auth.refresh needs a string `refresh_token`".to_owned()))?;
            ClientMessage::Refresh { refresh_token: b.refresh_token }
        }
        Some(kind @ ("subscribe" | "unsubscribe")) => {
            let b: ChannelBody =
                serde_json::from_value(body).map_err(|_| invalid(format!("{kind} needs a string `channel`")))?;
            if kind == "subscribe" {
                ClientMessage::Subscribe { channel: b.channel }
            } else {
                ClientMessage::Unsubscribe { channel: b.channel }
            }
        }
        Some("publish") => {
            let b: PublishBody =
                serde_json::from_value(body).map_err(|_| invalid("publish needs a string `channel`".to_owned()))?;
            ClientMessage::Publish { channel: b.channel, data: b.data }
        }
        Some("ping") => ClientMessage::Ping,
        Some(other) => {
            return Err(ParseError {
                code: "unknown_type",
                message: format!("unknown message type `{}`", other.chars().take(64).collect::<String>()),
                reference,
            });
        }
        None => return Err(invalid("a message needs a string `type`".to_owned())),
    };
    Ok((message, reference))
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum ServerMessage<'a> {
    #[serde(rename = "auth.refreshed")]
    Refreshed {
        access_token: &'a str,
        refresh_token: &'a str,
        /// RFC 3339 UTC, like every timestamp Portcullis sends.
        expires_at: String,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
    },
    #[serde(rename = "auth.expiring")]
    Expiring { expires_in: i64 },
    #[serde(rename = "message")]
    Message { channel: &'a str, data: &'a Value },
    #[serde(rename = "error")]
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(rename = "ref")]
        reference: Option<&'a Value>,
    },
    #[serde(rename = "pong")]
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a Value>,
    },
}

impl ServerMessage<'_> {
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail; an empty object is never sent in practice.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// The id a connection's own `user:{id}` channel is named after: the platform user for user
/// and PAT credentials, the SDK subject (`sdk:{client_id}:{external_user_id}`) for SDK tokens;
/// API keys and services have none.
pub fn own_id(context: &AuthContext) -> Option<&str> {
    match context.kind {
        Kind::User | Kind::Pat => context.user_id.as_deref().or(Some(context.subject.as_str())),
        Kind::Sdk => Some(context.subject.as_str()).filter(|s| !s.is_empty()),
        Kind::ApiKey | Kind::Service => None,
    }
}

/// The channel a user's own messages and account events arrive on.
pub fn user_channel(id: &str) -> String {
    format!("user:{id}")
}

/// The channel a tenant-wide publish arrives on.
pub fn tenant_channel(tenant_id: &str) -> String {
    format!("tenant:{tenant_id}")
}

/// Whether `context` may subscribe to (or, with `socket:publish`, publish on) `channel`:
/// its own `user:{id}`, or `tenant:{tid}` and `tenant:{tid}:…` of its own tenant. Services may
/// use any well-formed channel.
pub fn may_use(context: &AuthContext, channel: &str) -> bool {
    if channel.is_empty() || channel.len() > MAX_CHANNEL_BYTES || channel.chars().any(char::is_control) {
        return false;
    }
    if context.kind == Kind::Service {
        return true;
    }
    if let Some(id) = channel.strip_prefix("user:") {
        return own_id(context).is_some_and(|own| own == id);
    }
    if let Some(rest) = channel.strip_prefix("tenant:") {
        let tenant = rest.split_once(':').map_or(rest, |(tenant, _)| tenant);
        return !tenant.is_empty() && context.tenant_id.as_deref() == Some(tenant);
    }
    false
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn context(kind: Kind, user: Option<&str>, tenant: Option<&str>, subject: &str) -> AuthContext {
        AuthContext {
            subject: subject.into(),
            kind,
            user_id: user.map(Into::into),
            tenant_id: tenant.map(Into::into),
            client_id: tenant.map(Into::into),
            session_id: None,
            credential_id: None,
            role: None,
            scopes: auth_contract::scope::Scopes::all(),
            expires_at: None,
            rate_limit: None,
        }
    }

    #[test]
    fn parses_every_client_message() {
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok((ClientMessage::Ping, None)));
        assert_eq!(
            parse(r#"{"type":"subscribe","channel":"user:1","ref":7}"#),
            Ok((ClientMessage::Subscribe { channel: "user:1".into() }, Some(json!(7))))
        );
        assert_eq!(
            parse(r#"{"type":"unsubscribe","channel":"user:1"}"#),
            Ok((ClientMessage::Unsubscribe { channel: "user:1".into() }, None))
        );
        assert_eq!(
            parse(r#"{"type":"publish","channel":"tenant:t","data":{"a":1}}"#),
            Ok((ClientMessage::Publish { channel: "tenant:t".into(), data: json!({"a": 1}) }, None))
        );
        assert_eq!(
            parse(r#"{"type":"auth.refresh","refresh_token":"pcr_x"}"#),
            Ok((ClientMessage::Refresh { refresh_token: "pcr_x".into() }, None))
        );
    }

    #[test]
    fn refuses_what_is_not_a_message() {
        for (text, code) in [
            ("not json", "malformed_message"),
            ("[1,2]", "malformed_message"),
            (r#"{"channel":"x"}"#, "malformed_message"),
            (r#"{"type":"subscribe"}"#, "malformed_message"),
            (r#"{"type":"subscribe","channel":5}"#, "malformed_message"),
            (r#"{"type":"auth.refresh"}"#, "malformed_message"),
            (r#"{"type":"shout"}"#, "unknown_type"),
        ] {
            assert_eq!(parse(text).map_err(|e| e.code), Err(code), "{text}");
        }
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let data = json!({"x": 1});
        assert_eq!(
            serde_json::to_value(ServerMessage::Message { channel: "user:1", data: &data }).unwrap(),
            json!({"type": "message", "channel": "user:1", "data": {"x": 1}})
        );
        assert_eq!(
            serde_json::to_value(ServerMessage::Error { code: "forbidden", message: "no", reference: None }).unwrap(),
            json!({"type": "error", "code": "forbidden", "message": "no", "ref": null})
        );
        assert_eq!(
            serde_json::to_value(ServerMessage::Expiring { expires_in: 60 }).unwrap(),
            json!({"type": "auth.expiring", "expires_in": 60})
        );
        assert_eq!(serde_json::to_value(ServerMessage::Pong { reference: None }).unwrap(), json!({"type": "pong"}));
    }

    #[test]
    fn channel_permissions_come_from_the_context() {
        let user = context(Kind::User, Some("u1"), None, "u1");
        assert!(may_use(&user, "user:u1"));
        assert!(!may_use(&user, "user:u2"));
        assert!(!may_use(&user, "tenant:t1:news"));
        assert!(!may_use(&user, "global"));
        let sdk = context(Kind::Sdk, None, Some("t1"), "sdk:t1:42");
        assert!(may_use(&sdk, "user:sdk:t1:42"));
        assert!(may_use(&sdk, "tenant:t1"));
        assert!(may_use(&sdk, "tenant:t1:news"));
        assert!(!may_use(&sdk, "tenant:t10:news"));
        assert!(!may_use(&sdk, "tenant::news"));
        let key = context(Kind::ApiKey, None, Some("t1"), "client:t1");
        assert!(may_use(&key, "tenant:t1:orders"));
        assert!(!may_use(&key, "user:client:t1"));
        assert!(!may_use(&user, &format!("user:{}", "u".repeat(300))));
    }
}
