//! `POST /internal/publish`: a backend service (service token, validated by the auth service)
//! sends data to a user, a channel or a tenant on every socket node.

use auth_contract::{ErrorCode, Kind};
use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{ApiError, Peer, Problem, RequestId, client_ip};
use crate::{
    protocol::{MAX_CHANNEL_BYTES, MAX_MESSAGE_BYTES},
    service::{SocketService, Target},
};

/// The body carries the data plus a little addressing.
const MAX_BODY: usize = MAX_MESSAGE_BYTES;

fn target(body: &serde_json::Map<String, Value>) -> Result<Target, ApiError> {
    let mut targets = Vec::new();
    for field in ["user_id", "channel", "tenant_id"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => {
                let text = text.trim();
                if text.is_empty() || text.len() > MAX_CHANNEL_BYTES || text.chars().any(char::is_control) {
                    return Err(ApiError::Validation(format!("`{field}` must be 1 to {MAX_CHANNEL_BYTES} characters")));
                }
                targets.push(match field {
                    "user_id" => Target::UserId(text.to_owned()),
                    "channel" => Target::Channel(text.to_owned()),
                    _ => Target::TenantId(text.to_owned()),
                });
            }
            Some(_) => return Err(ApiError::MalformedBody(format!("`{field}` must be a string"))),
        }
    }
    match targets.len() {
        1 => Ok(targets.remove(0)),
        0 => Err(ApiError::Validation("name one of `user_id`, `channel` or `tenant_id`".to_owned())),
        _ => Err(ApiError::Validation("name only one of `user_id`, `channel` or `tenant_id`".to_owned())),
    }
}

fn only_services() -> ApiError {
    ApiError::Denied { code: ErrorCode::Forbidden, message: "only internal services may publish here".to_owned() }
}

pub async fn publish(
    State(service): State<SocketService>,
    Peer(peer): Peer,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let fail = |error: ApiError| error.at(&request_id);
    let token = match auth_contract::Presented::from_headers(&headers) {
        Ok(auth_contract::Presented::Token(token)) => token.to_owned(),
        Ok(auth_contract::Presented::ApiKey(_)) => return Err(fail(only_services())),
        Err(auth_contract::CredentialError::Missing) => return Err(fail(ApiError::TokenMissing)),
        Err(err) => return Err(fail(ApiError::Denied { code: err.code(), message: err.to_string() })),
    };
    let ip = client_ip(&service, peer, &headers);
    let context = service.auth().validate(&token, Some(ip), None).await.map_err(|e| fail(e.into()))?;
    if context.kind != Kind::Service {
        return Err(fail(only_services()));
    }

    if !platform::media::is_json(&headers) {
        return Err(fail(ApiError::UnsupportedMediaType));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| fail(ApiError::BodyTooLarge(MAX_BODY)))?;
    let mut body = match platform::media::parse_json::<Value>(&bytes) {
        Ok(Value::Object(body)) => body,
        Ok(_) => return Err(fail(ApiError::MalformedBody("the body must be a JSON object".to_owned()))),
        Err(err) => return Err(fail(ApiError::MalformedBody(err.to_string()))),
    };
    let target = target(&body).map_err(fail)?;
    let Some(data) = body.remove("data") else {
        return Err(fail(ApiError::MalformedBody("`data` is required".to_owned())));
    };
    service.publish(target, data).await.map_err(|e| fail(e.into()))?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"status": "accepted"}))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> serde_json::Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn exactly_one_target() {
        assert_eq!(target(&object(json!({"user_id": "u1"}))).ok(), Some(Target::UserId("u1".into())));
        assert_eq!(target(&object(json!({"channel": "tenant:t:x"}))).ok(), Some(Target::Channel("tenant:t:x".into())));
        assert_eq!(target(&object(json!({"tenant_id": "t"}))).ok(), Some(Target::TenantId("t".into())));
        assert!(matches!(target(&object(json!({}))), Err(ApiError::Validation(_))));
        assert!(matches!(target(&object(json!({"user_id": "a", "tenant_id": "b"}))), Err(ApiError::Validation(_))));
        assert!(matches!(target(&object(json!({"user_id": 5}))), Err(ApiError::MalformedBody(_))));
        assert!(matches!(target(&object(json!({"user_id": " "}))), Err(ApiError::Validation(_))));
    }
}
