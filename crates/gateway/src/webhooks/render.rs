//! What an upstream receives for an event (SPEC §6): a CloudEvents 1.0 structured message
//! (`application/cloudevents+json`) by default, or the sender's bytes and headers (`raw`),
//! signed by the gateway with Standard Webhooks when the source has `delivery_secrets`.

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use hmac::{Hmac, Mac as _};
use http::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret as _, SecretBox};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::{outbox::StoredEvent, verify};
use crate::config::routes::{Envelope, Webhook, WebhookProfile};

pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
pub const SOURCE_HEADER: HeaderName = HeaderName::from_static("x-webhook-source");
pub const ID_HEADER: HeaderName = HeaderName::from_static("webhook-id");
pub const TIMESTAMP_HEADER: HeaderName = HeaderName::from_static("webhook-timestamp");
pub const SIGNATURE_HEADER: HeaderName = HeaderName::from_static("webhook-signature");
pub const SEQUENCE_HEADER: HeaderName = HeaderName::from_static("webhook-sequence");
/// Digits of a `sequence` as delivered: zero-padded so it sorts as text, as CloudEvents'
/// sequence extension asks.
const SEQUENCE_DIGITS: usize = 20;

/// The `sequence` as delivered.
pub fn sequence_text(sequence: u64) -> String {
    format!("{sequence:0SEQUENCE_DIGITS$}")
}

/// How one source's events are rendered for delivery.
pub struct Render {
    source: String,
    envelope: Envelope,
    /// Standard Webhooks keys of `delivery_secrets`.
    keys: Vec<SecretBox<[u8]>>,
}

impl std::fmt::Debug for Render {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Render").field("source", &self.source).field("envelope", &self.envelope).finish_non_exhaustive()
    }
}

/// A delivery's headers and body.
pub struct Rendered {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

fn header(value: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(value).map_err(|e| e.to_string())
}

impl Render {
    /// Fails when a `delivery_secrets` entry is a `whsec_` secret that is not base64.
    pub fn new(hook: &Webhook) -> Result<Self, String> {
        let keys = hook
            .delivery
            .delivery_secrets
            .iter()
            .enumerate()
            .map(|(i, secret)| {
                verify::decode_secret(&WebhookProfile::Standard, secret.expose_secret())
                    .map(|key| SecretBox::new(key.into_boxed_slice()))
                    .map_err(|e| format!("webhooks.{}.delivery_secrets[{i}]: {e}", hook.source))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { source: hook.source.clone(), envelope: hook.delivery.envelope, keys })
    }

    /// The headers and body an upstream receives for `event`, signed at `now` (unix seconds)
    /// when the source has delivery secrets.
    pub fn render(&self, event: &StoredEvent, now: i64) -> Result<Rendered, String> {
        let original = event.body()?;
        let mut headers = Vec::new();
        let body = match self.envelope {
            Envelope::CloudEvents => {
                headers.push((http::header::CONTENT_TYPE, HeaderValue::from_static(CLOUDEVENTS_CONTENT_TYPE)));
                Bytes::from(serde_json::to_vec(&self.cloud_event(event, &original)).map_err(|e| e.to_string())?)
            }
            Envelope::Raw => {
                let content_type = event.content_type.as_deref().unwrap_or("application/octet-stream");
                headers.push((http::header::CONTENT_TYPE, header(content_type)?));
                // The sender's signature headers go on only when the gateway does not sign:
                // an upstream verifies one party, not two.
                if self.keys.is_empty() {
                    for (name, value) in &event.headers {
                        if let (Ok(name), Ok(value)) =
                            (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value))
                        {
                            headers.push((name, value));
                        }
                    }
                }
                headers.push((SEQUENCE_HEADER, header(&sequence_text(event.sequence))?));
                original
            }
        };
        headers.push((ID_HEADER, header(&event.id)?));
        headers.push((SOURCE_HEADER, header(&event.source)?));
        if !self.keys.is_empty() {
            headers.push((TIMESTAMP_HEADER, header(&now.to_string())?));
            headers.push((SIGNATURE_HEADER, header(&self.signature(&event.id, now, &body))?));
        }
        Ok(Rendered { headers, body })
    }

    /// `v1,<base64>` under each key, space-separated (Standard Webhooks, signed content
    /// `id.timestamp.body`).
    fn signature(&self, id: &str, now: i64, body: &[u8]) -> String {
        let timestamp = now.to_string();
        self.keys
            .iter()
            .filter_map(|key| {
                let mut mac = Hmac::<Sha256>::new_from_slice(key.expose_secret()).ok()?;
                for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
                    mac.update(part);
                }
                Some(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The structured CloudEvent: the payload as `data` when it is JSON, else `data_base64`.
    fn cloud_event(&self, event: &StoredEvent, original: &[u8]) -> Value {
        let time = time::OffsetDateTime::from_unix_timestamp(event.received_at)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned());
        let mut cloud_event = Map::new();
        cloud_event.insert("specversion".into(), json!("1.0"));
        cloud_event.insert("id".into(), json!(event.id));
        cloud_event.insert("source".into(), json!(format!("portcullis/webhooks/{}", self.source)));
        cloud_event.insert("type".into(), json!(format!("portcullis.webhooks.{}", self.source)));
        cloud_event.insert("time".into(), json!(time));
        if let Some(key) = &event.key {
            cloud_event.insert("subject".into(), json!(key));
        }
        cloud_event.insert("sequence".into(), json!(sequence_text(event.sequence)));
        match serde_json::from_slice::<Value>(original) {
            Ok(data) => {
                cloud_event.insert("datacontenttype".into(), json!("application/json"));
                cloud_event.insert("data".into(), data);
            }
            Err(_) => {
                let content_type = event.content_type.as_deref().unwrap_or("application/octet-stream");
                cloud_event.insert("datacontenttype".into(), json!(content_type));
                cloud_event.insert("data_base64".into(), json!(BASE64.encode(original)));
            }
        }
        Value::Object(cloud_event)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::routes::RoutesFile;

    fn hook(extra: &str) -> Webhook {
        let text = format!(
            "[webhooks.meta]\nprofile = \"meta\"\nsecrets = [\"s\"]\nverify_token = \"t\"\nupstream = \"http://127.0.0.1:9\"\n{extra}\n"
        );
        RoutesFile::parse(&text).unwrap().webhooks.remove("meta").unwrap()
    }

    fn event(body: &[u8]) -> StoredEvent {
        StoredEvent::new(
            "evt-1".into(),
            "meta".into(),
            1_767_225_600,
            Some("application/json".into()),
            vec![("x-hub-signature-256".into(), "sha256=ab".into())],
            body,
        )
        .ordered(Some("1065:4915".into()), 42)
    }

    fn find<'a>(rendered: &'a Rendered, name: &str) -> Option<&'a str> {
        rendered.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn cloudevents_carry_the_payload_the_key_and_a_padded_sequence() {
        let render = Render::new(&hook("envelope = \"cloudevents\"")).unwrap();
        let rendered = render.render(&event(br#"{"object":"whatsapp_business_account"}"#), 1).unwrap();
        assert_eq!(find(&rendered, "content-type"), Some(CLOUDEVENTS_CONTENT_TYPE));
        assert_eq!(find(&rendered, "x-hub-signature-256"), None, "the sender's signature does not cover the envelope");
        let value: Value = serde_json::from_slice(&rendered.body).unwrap();
        assert_eq!(
            value,
            json!({
                "specversion": "1.0", "id": "evt-1", "source": "portcullis/webhooks/meta",
                "type": "portcullis.webhooks.meta", "time": "2026-01-01T00:00:00Z",
                "subject": "1065:4915", "sequence": "00000000000000000042",
                "datacontenttype": "application/json", "data": { "object": "whatsapp_business_account" }
            })
        );
        // Extension attribute names are lower-case letters and digits only (CloudEvents §3.1.1).
        for name in value.as_object().unwrap().keys() {
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{name}");
        }
        let binary = render.render(&event(&[0xff, 0x00]), 1).unwrap();
        let value: Value = serde_json::from_slice(&binary.body).unwrap();
        assert_eq!(value["data_base64"], json!("/wA="));
        assert!(value.get("data").is_none());
    }

    #[test]
    fn raw_keeps_the_senders_bytes_and_headers_with_the_sequence() {
        let render = Render::new(&hook("envelope = \"raw\"")).unwrap();
        let rendered = render.render(&event(b"{\"a\":1}"), 1).unwrap();
        assert_eq!(rendered.body.as_ref(), b"{\"a\":1}");
        assert_eq!(find(&rendered, "content-type"), Some("application/json"));
        assert_eq!(find(&rendered, "x-hub-signature-256"), Some("sha256=ab"));
        assert_eq!(find(&rendered, "webhook-sequence"), Some("00000000000000000042"));
        assert_eq!(find(&rendered, "webhook-signature"), None);
    }

    #[test]
    fn delivery_secrets_sign_with_standard_webhooks_under_each_key() {
        // The Standard Webhooks reference vector's key.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let render =
            Render::new(&hook(&format!("envelope = \"raw\"\ndelivery_secrets = [\"{secret}\", \"plain\"]"))).unwrap();
        let mut reference = event(br#"{"test": 2432232314}"#);
        reference.id = "msg_p5jXN8AQM9LWM0D4loKWxJek".into();
        let rendered = render.render(&reference, 1_614_265_330).unwrap();
        let signature = find(&rendered, "webhook-signature").unwrap();
        let (first, second) = signature.split_once(' ').unwrap();
        assert_eq!(first, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(second.starts_with("v1,") && second != first);
        assert_eq!(find(&rendered, "webhook-timestamp"), Some("1614265330"));
        assert_eq!(find(&rendered, "webhook-id"), Some("msg_p5jXN8AQM9LWM0D4loKWxJek"));
        assert_eq!(find(&rendered, "x-hub-signature-256"), None, "replaced by the gateway's own");
    }

    #[test]
    fn a_bad_whsec_delivery_secret_is_refused_naming_it() {
        let e = Render::new(&hook("delivery_secrets = [\"whsec_!!!\"]")).unwrap_err();
        assert!(e.contains("webhooks.meta.delivery_secrets[0]"), "{e}");
    }
}
