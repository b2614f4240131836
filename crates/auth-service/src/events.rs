//! Events the auth service publishes on the bus (SPEC §4). Every payload is a JSON object
//! with `event_id`, `occurred_at` and the ids it concerns; `docs/events.md` lists which
//! operation emits which.

use std::sync::Arc;

use platform::{
    bus::{EventBus, RetryingBus},
    clock::Clock,
};
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;

// The channel names are the contract's: every follower reads the same ones.
pub use auth_contract::events::{
    API_KEY_REVOKED, API_KEY_ROTATED, CLIENT_UPDATED, SESSION_ACTIVITY_UPDATED, SESSION_CREATED, SESSION_DELETED,
    SESSION_TERMINATED, SESSIONS_BULK_TERMINATED, TOKEN_REFRESHED, TOKEN_REVOKED, USER_DISABLED, USER_LOGIN,
    USER_LOGOUT, USER_PASSWORD_CHANGED, USER_REGISTERED, USER_ROLE_CHANGED,
};

/// Publishes events; a bus failure is never turned into a failed request, because the store
/// (the source of truth) has already changed: the event waits in a bounded queue and is
/// published again, in order, when the bus is back (`platform::bus::RetryingBus`); caches fed
/// by events expire within a minute on their own meanwhile.
#[derive(Clone)]
pub struct Events {
    bus: RetryingBus,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

impl Events {
    pub fn new(bus: Arc<dyn EventBus>, clock: Arc<dyn Clock>) -> Self {
        Self { bus: RetryingBus::new(bus), clock }
    }

    /// Events waiting for the bus, events dropped because too many waited, failed attempts.
    pub fn backlog(&self) -> (usize, u64, u64) {
        (self.bus.pending(), self.bus.dropped(), self.bus.failures())
    }

    /// `fields` must be a JSON object; `event_id` and `occurred_at` are added.
    pub async fn emit(&self, channel: &'static str, fields: Value) {
        let text = payload(self.clock.as_ref(), fields);
        // Never fails: an event the bus refuses waits in the queue and is published later.
        let _ = self.bus.publish(channel, &text).await;
    }
}

/// An event's JSON: `fields` (an object) with `event_id` and `occurred_at` added.
pub fn payload(clock: &dyn Clock, fields: Value) -> String {
    let mut payload = match fields {
        Value::Object(map) => map,
        other => {
            let mut map = Map::new();
            map.insert("data".into(), other);
            map
        }
    };
    payload.insert("event_id".into(), json!(uuid::Uuid::new_v4().to_string()));
    payload.insert("occurred_at".into(), json!(clock.now().format(&Rfc3339).unwrap_or_default()));
    Value::Object(payload).to_string()
}
