//! Ordering per conversation (SPEC §6): the key an accepted event is ordered by, read from
//! its JSON body or headers as the source's `ordering_key` says, and the `sequence` that
//! strictly increases in acceptance order (shared by every gateway instance through Redis).

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use deadpool_redis::Pool;
use http::HeaderMap;
use platform::{Unavailable, redis::client};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::config::routes::{KeyPart, OrderingKey};

/// Longest key kept as written; longer ones are replaced by their SHA-256 (hex), so a hostile
/// sender cannot make every stored event carry kilobytes of key.
pub const MAX_KEY_LEN: usize = 128;
/// Joins the parts of a composite key.
pub const KEY_SEPARATOR: char = ':';

/// A scalar's text: strings as they are, numbers as JSON writes them; anything else (null,
/// booleans, objects, arrays) or an empty string is absent.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn part_value(part: &KeyPart, headers: &HeaderMap, body: Option<&Value>) -> Option<String> {
    match part {
        KeyPart::Pointer(pointer) => body.and_then(|b| b.pointer(pointer)).and_then(scalar),
        KeyPart::Header(name) => {
            let mut values = headers.get_all(name).iter();
            // A repeated header has no single value to order by.
            let value = values.next()?.to_str().ok()?.trim();
            (values.next().is_none() && !value.is_empty()).then(|| value.to_owned())
        }
    }
}

/// The event's ordering key: the first alternative whose parts are all present, joined by
/// [`KEY_SEPARATOR`]; `None` (unordered) when none is. `body` is the parsed JSON body, when
/// it is JSON.
pub fn resolve(key: &OrderingKey, headers: &HeaderMap, body: Option<&Value>) -> Option<String> {
    let joined = key.alternatives.iter().find_map(|parts| {
        let mut joined = String::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                joined.push(KEY_SEPARATOR);
            }
            joined.push_str(&part_value(part, headers, body)?);
        }
        Some(joined)
    })?;
    if joined.len() <= MAX_KEY_LEN && !joined.chars().any(char::is_control) {
        return Some(joined);
    }
    let digest = Sha256::digest(joined.as_bytes());
    let mut hex = String::with_capacity(71);
    hex.push_str("sha256:");
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    Some(hex)
}

/// Hands out each source's strictly increasing sequence numbers: `INCR` of
/// `<prefix>webhooks:sequence:<source>` in distributed mode (every instance shares it), else
/// the process's own counter, which starts from the clock in microseconds so numbers keep
/// increasing across restarts.
pub struct Sequencer {
    redis: Option<(Pool, String)>,
    local: AtomicU64,
}

impl Sequencer {
    pub fn new(redis: Option<Pool>, key_prefix: &str) -> Self {
        Self { redis: redis.map(|pool| (pool, format!("{key_prefix}webhooks:sequence:"))), local: AtomicU64::new(0) }
    }

    pub async fn next(&self, source: &str) -> Result<u64, Unavailable> {
        let Some((pool, prefix)) = &self.redis else {
            let now =
                u64::try_from(platform::clock::Clock::now(&platform::clock::SystemClock).unix_timestamp_nanos() / 1000)
                    .unwrap_or(0);
            let previous = self.local.fetch_max(now, Ordering::Relaxed);
            return Ok(if previous >= now { self.local.fetch_add(1, Ordering::Relaxed) + 1 } else { now });
        };
        let mut conn = pool.get().await.map_err(|e| Unavailable::new("redis", e))?;
        client::cmd("INCR")
            .arg(format!("{prefix}{source}"))
            .query_async::<u64>(&mut conn)
            .await
            .map_err(|e| Unavailable::new("redis", e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn meta_body(from: Option<&str>, recipient: Option<&str>) -> Value {
        let mut value = json!({ "metadata": { "phone_number_id": "1065" } });
        if let Some(from) = from {
            value["messages"] = json!([{ "from": from, "id": "wamid.1" }]);
        }
        if let Some(to) = recipient {
            value["statuses"] = json!([{ "recipient_id": to, "status": "read" }]);
        }
        json!({ "object": "whatsapp_business_account", "entry": [{ "changes": [{ "value": value }] }] })
    }

    #[test]
    fn meta_orders_by_the_conversation_not_the_business_number() {
        let key = OrderingKey::meta_conversation();
        let headers = HeaderMap::new();
        assert_eq!(resolve(&key, &headers, Some(&meta_body(Some("4915"), None))).as_deref(), Some("1065:4915"));
        assert_eq!(resolve(&key, &headers, Some(&meta_body(None, Some("4916")))).as_deref(), Some("1065:4916"));
        // Neither a message nor a status: unordered, not keyed by the business number alone.
        assert_eq!(resolve(&key, &headers, Some(&meta_body(None, None))), None);
        assert_eq!(resolve(&key, &headers, None), None);
    }

    #[test]
    fn the_first_present_alternative_wins_and_headers_count() {
        let key = OrderingKey {
            alternatives: vec![
                vec![KeyPart::Header(http::HeaderName::from_static("x-conversation"))],
                vec![KeyPart::Pointer("/a".into()), KeyPart::Pointer("/n".into())],
            ],
        };
        let mut headers = HeaderMap::new();
        let body = json!({ "a": "x", "n": 7, "null": null, "obj": {} });
        assert_eq!(resolve(&key, &headers, Some(&body)).as_deref(), Some("x:7"));
        headers.insert("x-conversation", HeaderValue::from_static("conv-9"));
        assert_eq!(resolve(&key, &headers, Some(&body)).as_deref(), Some("conv-9"));
        // Repeated: no single value, so the next alternative.
        headers.append("x-conversation", HeaderValue::from_static("conv-10"));
        assert_eq!(resolve(&key, &headers, Some(&body)).as_deref(), Some("x:7"));
        let only_null = OrderingKey { alternatives: vec![vec![KeyPart::Pointer("/null".into())]] };
        assert_eq!(resolve(&only_null, &HeaderMap::new(), Some(&body)), None);
        let object = OrderingKey { alternatives: vec![vec![KeyPart::Pointer("/obj".into())]] };
        assert_eq!(resolve(&object, &HeaderMap::new(), Some(&body)), None);
    }

    #[test]
    fn long_or_control_keys_are_hashed() {
        let key = OrderingKey { alternatives: vec![vec![KeyPart::Pointer("/k".into())]] };
        let long = "k".repeat(10_000);
        let resolved = resolve(&key, &HeaderMap::new(), Some(&json!({ "k": long }))).unwrap();
        assert!(resolved.starts_with("sha256:") && resolved.len() == 71, "{resolved}");
        let control = resolve(&key, &HeaderMap::new(), Some(&json!({ "k": "a\nb" }))).unwrap();
        assert!(control.starts_with("sha256:"), "{control}");
        // Different keys stay different.
        assert_ne!(resolved, resolve(&key, &HeaderMap::new(), Some(&json!({ "k": "k".repeat(10_001) }))).unwrap());
    }

    #[tokio::test]
    async fn local_sequences_strictly_increase() {
        let sequencer = Sequencer::new(None, "");
        let mut last = 0;
        for _ in 0..10_000 {
            let next = sequencer.next("s").await.unwrap();
            assert!(next > last, "{next} after {last}");
            last = next;
        }
    }

    #[tokio::test]
    async fn shared_sequences_strictly_increase_across_instances() {
        let Some(testkit::Backend::Postgres { redis_url, .. }) = testkit::Backend::shared() else { return };
        let pool = platform::redis::connect(&redis_url).await.unwrap();
        let prefix = format!("pc_test:{}:", uuid::Uuid::new_v4().simple());
        let (a, b) = (Sequencer::new(Some(pool.clone()), &prefix), Sequencer::new(Some(pool), &prefix));
        let mut last = 0;
        for i in 0..100 {
            let next = if i % 2 == 0 { a.next("s").await.unwrap() } else { b.next("s").await.unwrap() };
            assert!(next > last);
            last = next;
        }
    }
}
