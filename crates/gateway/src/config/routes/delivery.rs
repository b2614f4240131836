//! How a webhook source's accepted events are delivered (SPEC §6): the ordering key that
//! keeps one conversation's events in order, how many keys are delivered at once, and the
//! retry schedule before an event goes to the dead letters.

use std::{ops::Range, str::FromStr, time::Duration};

use http::HeaderName;
use platform::duration::parse_duration;
use secrecy::SecretString;
use toml::Spanned;

use super::{RoutesError, Source, SpannedList};

/// `retry`'s default: the waits after the 1st, 2nd, … failed attempt (SPEC §6). An event
/// failing all ten attempts goes to the dead letters, about 31 hours after it was accepted.
pub const DEFAULT_RETRY: [Duration; 9] = [
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(3600),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(4 * 3600),
    Duration::from_secs(8 * 3600),
    Duration::from_secs(8 * 3600),
];
/// `concurrency`'s default: keys (or unordered events) delivered at the same time.
pub const DEFAULT_CONCURRENCY: usize = 8;
const MAX_CONCURRENCY: i64 = 256;
const MAX_RETRY_TIERS: usize = 32;
const MIN_RETRY_WAIT: Duration = Duration::from_millis(10);
const MAX_RETRY_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Alternatives and parts of one ordering key.
const MAX_KEY_TERMS: usize = 16;

/// Where one part of an ordering key is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// An RFC 6901 pointer into the JSON body, such as `/entry/0/id`.
    Pointer(String),
    /// A request header (`header:<name>` in the configuration).
    Header(HeaderName),
}

/// `ordering_key`: alternatives tried in order, the first whose parts are all present wins;
/// an alternative of several parts is a composite key (the values joined with `:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderingKey {
    pub alternatives: Vec<Vec<KeyPart>>,
}

impl OrderingKey {
    /// Meta's default: the conversation, the business phone number's id with the customer
    /// who wrote (`messages[0].from`) or who is written to (`statuses[0].recipient_id`).
    pub fn meta_conversation() -> Self {
        let value = "/entry/0/changes/0/value";
        let pointer = |p: &str| KeyPart::Pointer(format!("{value}/{p}"));
        Self {
            alternatives: vec![
                vec![pointer("metadata/phone_number_id"), pointer("messages/0/from")],
                vec![pointer("metadata/phone_number_id"), pointer("statuses/0/recipient_id")],
            ],
        }
    }
}

/// `publish = { exchange, routing_key }`: events handed to broker consumers (RabbitMQ,
/// `AMQP_URL`) instead of POSTed to an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub exchange: String,
    pub routing_key: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublish {
    exchange: String,
    routing_key: String,
}

/// Longest exchange name or routing key (AMQP short strings).
const MAX_AMQP_NAME: usize = 255;

/// What an upstream receives for each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Envelope {
    /// A CloudEvents 1.0 structured message (`application/cloudevents+json`).
    #[default]
    CloudEvents,
    /// The sender's bytes and headers as received, with `webhook-sequence`.
    Raw,
}

/// The delivery settings of one source.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `None`: every event is unordered (delivered as soon as a slot is free).
    pub ordering: Option<OrderingKey>,
    pub concurrency: usize,
    /// The wait after each failed attempt; one attempt more than waits, then dead letters.
    pub retry: Vec<Duration>,
    pub envelope: Envelope,
    /// Whether the source chose its envelope (a start-up warning otherwise: the default
    /// changed from the sender's bytes to CloudEvents).
    pub envelope_chosen: bool,
    /// When set, deliveries are signed by the gateway (Standard Webhooks) with each of them.
    pub delivery_secrets: Vec<SecretString>,
    /// `ca_file`: the PEM roots an https upstream's certificate must chain to, instead of the
    /// system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// Set: events are published to this exchange instead of POSTed.
    pub publish: Option<Publish>,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            ordering: None,
            concurrency: DEFAULT_CONCURRENCY,
            retry: DEFAULT_RETRY.to_vec(),
            envelope: Envelope::default(),
            envelope_chosen: false,
            delivery_secrets: Vec::new(),
            ca_file: None,
            publish: None,
        }
    }
}

/// The raw `ordering_key`: one term, or a list whose items are terms or lists of terms.
pub(super) type RawOrderingKey = toml::Value;

/// The raw delivery keys of a `[webhooks.<source>]` table.
pub(super) struct RawDelivery<'a> {
    pub ordering_key: Option<&'a Spanned<RawOrderingKey>>,
    pub concurrency: Option<&'a Spanned<i64>>,
    pub retry: Option<&'a SpannedList>,
    pub envelope: Option<&'a Spanned<String>>,
    pub delivery_secrets: Option<&'a SpannedList>,
    pub ca_file: Option<&'a Spanned<String>>,
    /// Whether the upstream is https (`ca_file` applies only then).
    pub https: bool,
    /// Whether the table names an `upstream`.
    pub upstream: bool,
    pub publish: Option<&'a Spanned<RawPublish>>,
    /// The whole table, for a key it lacks.
    pub table: Range<usize>,
    /// Meta sources are ordered per conversation unless they say otherwise.
    pub meta: bool,
}

fn part(source: &Source<'_>, field: &str, span: &Range<usize>, term: &toml::Value) -> Result<KeyPart, RoutesError> {
    let Some(text) = term.as_str().map(str::trim) else {
        return Err(source.error(span.clone(), field, "a key part is a string: a JSON pointer or `header:<name>`"));
    };
    if let Some(name) = text.strip_prefix("header:") {
        return HeaderName::from_str(name.trim())
            .map(KeyPart::Header)
            .map_err(|_| source.error(span.clone(), field, format!("`{name}` is not a header name")));
    }
    if text.starts_with('/') {
        return Ok(KeyPart::Pointer(text.to_owned()));
    }
    Err(source.error(
        span.clone(),
        field,
        format!("`{text}` is neither a JSON pointer (such as `/entry/0/id`) nor `header:<name>`"),
    ))
}

fn ordering(
    source: &Source<'_>,
    field: &str,
    raw: &Spanned<RawOrderingKey>,
) -> Result<Option<OrderingKey>, RoutesError> {
    let span: Range<usize> = raw.span();
    let alternatives = match raw.get_ref() {
        // `ordering_key = ""` is how a Meta source asks for no ordering at all.
        toml::Value::String(term) if term.trim().is_empty() => return Ok(None),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::Array(parts) if parts.is_empty() => {
                    Err(source.error(span.clone(), field, "a composite key needs at least one part"))
                }
                toml::Value::Array(parts) => parts.iter().map(|p| part(source, field, &span, p)).collect(),
                term => Ok(vec![part(source, field, &span, term)?]),
            })
            .collect::<Result<Vec<_>, _>>()?,
        term => vec![vec![part(source, field, &span, term)?]],
    };
    if alternatives.is_empty() {
        return Err(source.error(span, field, "list at least one JSON pointer or header, or write \"\" for none"));
    }
    if alternatives.len() > MAX_KEY_TERMS || alternatives.iter().any(|a| a.len() > MAX_KEY_TERMS) {
        return Err(source.error(
            span,
            field,
            format!("at most {MAX_KEY_TERMS} alternatives of {MAX_KEY_TERMS} parts"),
        ));
    }
    Ok(Some(OrderingKey { alternatives }))
}

pub(super) fn build(source: &Source<'_>, source_name: &str, raw: RawDelivery<'_>) -> Result<Delivery, RoutesError> {
    let field = |key: &str| format!("webhooks.{source_name}.{key}");
    let ordering = match raw.ordering_key {
        Some(key) => ordering(source, &field("ordering_key"), key)?,
        None if raw.meta => Some(OrderingKey::meta_conversation()),
        None => None,
    };
    let concurrency = match raw.concurrency {
        None => DEFAULT_CONCURRENCY,
        Some(n) if (1..=MAX_CONCURRENCY).contains(n.get_ref()) => usize::try_from(*n.get_ref()).unwrap_or(1),
        Some(n) => {
            return Err(source.error(n.span(), field("concurrency"), format!("must be 1 to {MAX_CONCURRENCY}")));
        }
    };
    let retry = match raw.retry {
        None => DEFAULT_RETRY.to_vec(),
        Some(list) if list.get_ref().len() > MAX_RETRY_TIERS => {
            return Err(source.error(list.span(), field("retry"), format!("at most {MAX_RETRY_TIERS} waits")));
        }
        Some(list) => list
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, wait)| {
                let at = format!("{}[{i}]", field("retry"));
                let value = parse_duration(wait.get_ref()).map_err(|e| source.error(wait.span(), at.clone(), e))?;
                if !(MIN_RETRY_WAIT..=MAX_RETRY_WAIT).contains(&value) {
                    return Err(source.error(wait.span(), at, "must be between 10ms and 7d"));
                }
                Ok(value)
            })
            .collect::<Result<_, _>>()?,
    };
    let envelope = match raw.envelope {
        None => Envelope::CloudEvents,
        Some(e) => match e.get_ref().as_str() {
            "cloudevents" => Envelope::CloudEvents,
            "raw" => Envelope::Raw,
            other => {
                return Err(source.error(e.span(), field("envelope"), format!("`{other}` is not cloudevents or raw")));
            }
        },
    };
    let delivery_secrets = match raw.delivery_secrets {
        None => Vec::new(),
        Some(list) if list.get_ref().is_empty() => {
            return Err(source.error(list.span(), field("delivery_secrets"), "list at least one, or remove the key"));
        }
        Some(list) => list
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, secret)| {
                if secret.get_ref().trim().is_empty() {
                    return Err(source.error(
                        secret.span(),
                        format!("{}[{i}]", field("delivery_secrets")),
                        "must not be empty",
                    ));
                }
                Ok(SecretString::from(secret.get_ref().clone()))
            })
            .collect::<Result<_, _>>()?,
    };
    let ca_file = match raw.ca_file {
        None => None,
        Some(file) if !raw.https => {
            return Err(source.error(file.span(), field("ca_file"), "applies only to an https upstream"));
        }
        Some(file) if file.get_ref().trim().is_empty() => {
            return Err(source.error(file.span(), field("ca_file"), "must name a PEM file"));
        }
        Some(file) => Some(std::path::PathBuf::from(file.get_ref().trim())),
    };
    let publish = match (raw.publish, raw.upstream) {
        (Some(publish), true) => {
            return Err(source.error(publish.span(), field("publish"), "give either upstream or publish, not both"));
        }
        (None, false) => {
            return Err(source.error(
                raw.table,
                field("upstream"),
                "is required (or publish = { exchange, routing_key } to hand events to broker consumers)",
            ));
        }
        (None, true) => None,
        (Some(publish), false) => {
            let RawPublish { exchange, routing_key } = publish.get_ref();
            if exchange.is_empty() || exchange.starts_with("amq.") || exchange.len() > MAX_AMQP_NAME {
                return Err(source.error(
                    publish.span(),
                    field("publish.exchange"),
                    "must name an exchange of your own (not the default one, not amq.*), at most 255 bytes",
                ));
            }
            if routing_key.len() > MAX_AMQP_NAME {
                return Err(source.error(publish.span(), field("publish.routing_key"), "at most 255 bytes"));
            }
            Some(Publish { exchange: exchange.clone(), routing_key: routing_key.clone() })
        }
    };
    Ok(Delivery {
        publish,
        ordering,
        concurrency,
        retry,
        envelope,
        envelope_chosen: raw.envelope.is_some(),
        delivery_secrets,
        ca_file,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::routes::RoutesFile;

    fn parse(extra: &str) -> Result<Delivery, String> {
        let text = format!(
            "[webhooks.chat]\nprofile = \"standard\"\nsecrets = [\"s\"]\nupstream = \"http://127.0.0.1:9\"\n{extra}\n"
        );
        RoutesFile::parse(&text).map(|mut f| f.webhooks.remove("chat").unwrap().delivery).map_err(|e| e.to_string())
    }

    #[test]
    fn the_webhook_guides_examples_parse() {
        let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/webhooks.md")).unwrap();
        let blocks: Vec<&str> =
            guide.split("```toml\n").skip(1).map(|rest| rest.split("```").next().unwrap_or_default()).collect();
        assert!(blocks.len() >= 3, "the guide's TOML examples: {}", blocks.len());
        for block in blocks {
            RoutesFile::parse(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        let delivery = parse("").unwrap();
        assert_eq!(delivery.ordering, None, "standard sources are unordered unless they say");
        assert_eq!(delivery.concurrency, 8);
        assert_eq!(delivery.retry, DEFAULT_RETRY);
        assert_eq!(delivery.envelope, Envelope::CloudEvents);
        assert!(!delivery.envelope_chosen);
    }

    #[test]
    fn ordering_keys_take_pointers_headers_alternatives_and_composites() {
        let one = parse("ordering_key = \"/conversation\"").unwrap().ordering.unwrap();
        assert_eq!(one.alternatives, [vec![KeyPart::Pointer("/conversation".into())]]);
        let many = parse("ordering_key = [\"header:X-Conversation\", [\"/a\", \"/b\"]]").unwrap().ordering.unwrap();
        assert_eq!(
            many.alternatives,
            [
                vec![KeyPart::Header(HeaderName::from_static("x-conversation"))],
                vec![KeyPart::Pointer("/a".into()), KeyPart::Pointer("/b".into())]
            ]
        );
        assert_eq!(parse("ordering_key = \"\"").unwrap().ordering, None);
    }

    #[test]
    fn bad_delivery_keys_are_refused_naming_them() {
        for (extra, field) in [
            ("ordering_key = \"conversation\"", "webhooks.chat.ordering_key"),
            ("ordering_key = [[]]", "webhooks.chat.ordering_key"),
            ("ordering_key = 5", "webhooks.chat.ordering_key"),
            ("ordering_key = \"header:bad header\"", "webhooks.chat.ordering_key"),
            ("concurrency = 0", "webhooks.chat.concurrency"),
            ("concurrency = 257", "webhooks.chat.concurrency"),
            ("retry = [\"1ms\"]", "webhooks.chat.retry[0]"),
            ("retry = [\"10s\", \"soon\"]", "webhooks.chat.retry[1]"),
            ("envelope = \"xml\"", "webhooks.chat.envelope"),
            ("delivery_secrets = []", "webhooks.chat.delivery_secrets"),
            ("delivery_secrets = [\" \"]", "webhooks.chat.delivery_secrets[0]"),
            ("ca_file = \"/etc/ca.pem\"", "webhooks.chat.ca_file"),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(e.contains(field), "{extra}: {e}");
        }
    }
}
