//! `[webhooks.<source>]` tables: how `POST /v1/webhooks/{source}` is verified (profile,
//! secrets, replay tolerance, source IPs), the schema its payloads must match, and where
//! accepted events go.

use std::{net::IpAddr, ops::Range, str::FromStr, time::Duration};

use http::HeaderName;
use ipnet::IpNet;
use platform::duration::parse_duration;
use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;

use super::{
    RoutesError, Source, SpannedList,
    delivery::{self, Delivery, RawDelivery, RawOrderingKey, RawPublish},
};
use crate::{
    domain::Upstream,
    webhooks::schema::{OnSchemaFailure, PayloadSchema},
};

/// How long a signed event stays acceptable, and how long its id or signature is remembered to
/// refuse a replay, unless the source says otherwise.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
pub const MIN_TOLERANCE: Duration = Duration::from_secs(1);
pub const MAX_TOLERANCE: Duration = Duration::from_secs(24 * 3600);
const MAX_SOURCE_LEN: usize = 64;

/// A configured webhook source.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// The `{source}` path segment.
    pub source: String,
    pub profile: WebhookProfile,
    /// Every secret currently accepted; more than one while rotating.
    pub secrets: Vec<SecretString>,
    /// Where events are POSTed; `None` when the source publishes to the broker instead
    /// (`delivery.publish`).
    pub upstream: Option<Upstream>,
    /// Timestamp tolerance and replay window.
    pub tolerance: Duration,
    /// Networks a delivery may come from; empty allows any address.
    pub allowed_ips: Vec<IpNet>,
    /// The source's own limit on deliveries (all senders together); webhooks are not counted
    /// against the generic `IP_RATE_LIMIT`.
    pub rate_limit: Option<platform::rate::RateLimit>,
    /// `schema`: what a payload must match, compiled at start-up, with its
    /// `on_schema_failure`; `None` accepts any payload.
    pub schema: Option<PayloadSchema>,
    /// Ordering key, concurrency and retry schedule.
    pub delivery: Delivery,
    pub line: usize,
}

impl Webhook {
    /// Whether a delivery from `ip` passes the source IP allowlist (IPv4-mapped IPv6 addresses
    /// match their IPv4 entries).
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        let ip = platform::net::canonical(ip);
        self.allowed_ips.is_empty() || self.allowed_ips.iter().any(|net| net.contains(&ip))
    }
}

/// The signature scheme of a source.
#[derive(Debug, Clone)]
pub enum WebhookProfile {
    /// `X-Hub-Signature-256: sha256=<hex>` over the body, and the GET handshake answered when
    /// `hub.verify_token` equals this token.
    Meta { verify_token: SecretString },
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`
    /// over `id.timestamp.body`.
    Standard,
    /// A signature in one header, configured per source.
    Generic(GenericSignature),
    /// A static secret in one header (Genesys-style), compared with every secret.
    Token(TokenAuth),
}

impl WebhookProfile {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Meta { .. } => "meta",
            Self::Standard => "standard",
            Self::Generic(_) => "generic",
            Self::Token(_) => "token",
        }
    }
}

/// The generic profile: `<header>: <prefix><hex or base64 HMAC-SHA256 of the body>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericSignature {
    pub header: HeaderName,
    /// Text before the encoded signature, such as `sha256=`; may be empty.
    pub prefix: String,
    pub encoding: SignatureEncoding,
    /// A header carrying the delivery's unix time, checked against the tolerance.
    pub timestamp_header: Option<HeaderName>,
}

/// The token profile: `<header>: <one of the secrets>`, with the replay key taken from the
/// event id when the source names where it is, else from a hash of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAuth {
    pub header: HeaderName,
    pub event_id: Option<EventIdSource>,
}

/// Where a token-profile delivery carries its event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventIdSource {
    /// A request header (`id_header`).
    Header(HeaderName),
    /// An RFC 6901 JSON pointer into the body (`id_pointer`), such as `/eventId`.
    Pointer(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    profile: Spanned<String>,
    secrets: SpannedList,
    verify_token: Option<Spanned<String>>,
    upstream: Option<Spanned<String>>,
    publish: Option<Spanned<RawPublish>>,
    header: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    encoding: Option<Spanned<String>>,
    timestamp_header: Option<Spanned<String>>,
    id_header: Option<Spanned<String>>,
    id_pointer: Option<Spanned<String>>,
    tolerance: Option<Spanned<String>>,
    allowed_ips: Option<SpannedList>,
    rate_limit: Option<Spanned<String>>,
    ordering_key: Option<Spanned<RawOrderingKey>>,
    concurrency: Option<Spanned<i64>>,
    retry: Option<SpannedList>,
    envelope: Option<Spanned<String>>,
    delivery_secrets: Option<SpannedList>,
    ca_file: Option<Spanned<String>>,
    schema: Option<Spanned<String>>,
    on_schema_failure: Option<Spanned<String>>,
}

fn valid_source(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SOURCE_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn header_name(source: &Source<'_>, field: String, value: &Spanned<String>) -> Result<HeaderName, RoutesError> {
    HeaderName::from_str(value.get_ref().trim())
        .map_err(|_| source.error(value.span(), field, format!("`{}` is not a header name", value.get_ref())))
}

/// The table's `header`, which its profile requires (`missing` says why).
fn required_header(
    source: &Source<'_>,
    table: &Spanned<RawWebhook>,
    field: String,
    missing: &str,
) -> Result<HeaderName, RoutesError> {
    match &table.get_ref().header {
        Some(header) => header_name(source, field, header),
        None => Err(source.error(table.span(), field, missing)),
    }
}

pub(super) fn build(
    source: &Source<'_>,
    name: &Spanned<String>,
    table: &Spanned<RawWebhook>,
) -> Result<Webhook, RoutesError> {
    let raw = table.get_ref();
    let source_name = name.get_ref().as_str();
    let field = |key: &str| format!("webhooks.{source_name}.{key}");
    if !valid_source(source_name) {
        return Err(source.error(
            name.span(),
            format!("webhooks.{source_name}"),
            "a source name is its URL segment: lowercase letters, digits, - and _, at most 64",
        ));
    }

    if raw.secrets.get_ref().is_empty() {
        return Err(source.error(raw.secrets.span(), field("secrets"), "must list at least one secret"));
    }
    let mut secrets = Vec::new();
    for (i, secret) in raw.secrets.get_ref().iter().enumerate() {
        if secret.get_ref().trim().is_empty() {
            return Err(source.error(secret.span(), format!("{}[{i}]", field("secrets")), "must not be empty"));
        }
        secrets.push(SecretString::from(secret.get_ref().clone()));
    }

    let upstream = raw
        .upstream
        .as_ref()
        .map(|u| Upstream::parse(u.get_ref()).map_err(|e| source.error(u.span(), field("upstream"), e)))
        .transpose()?;

    let profile = match raw.profile.get_ref().as_str() {
        "meta" => WebhookProfile::Meta {
            verify_token: match &raw.verify_token {
                Some(token) if !token.get_ref().trim().is_empty() => SecretString::from(token.get_ref().clone()),
                Some(token) => return Err(source.error(token.span(), field("verify_token"), "must not be empty")),
                None => {
                    return Err(source.error(
                        table.span(),
                        field("verify_token"),
                        "is required by the meta profile, to answer its GET verification handshake",
                    ));
                }
            },
        },
        "standard" => WebhookProfile::Standard,
        "generic" => {
            let header = required_header(
                source,
                table,
                field("header"),
                "is required by the generic profile: the header that carries the signature",
            )?;
            let encoding = match raw.encoding.as_ref().map(|e| (e, e.get_ref().as_str())) {
                None | Some((_, "hex")) => SignatureEncoding::Hex,
                Some((_, "base64")) => SignatureEncoding::Base64,
                Some((e, other)) => {
                    return Err(source.error(e.span(), field("encoding"), format!("`{other}` is not hex or base64")));
                }
            };
            let timestamp_header =
                raw.timestamp_header.as_ref().map(|h| header_name(source, field("timestamp_header"), h)).transpose()?;
            WebhookProfile::Generic(GenericSignature {
                header,
                prefix: raw.prefix.as_ref().map(|p| p.get_ref().clone()).unwrap_or_default(),
                encoding,
                timestamp_header,
            })
        }
        "token" => {
            let header = required_header(
                source,
                table,
                field("header"),
                "is required by the token profile: the header that carries the secret",
            )?;
            let event_id = match (&raw.id_header, &raw.id_pointer) {
                (Some(_), Some(pointer)) => {
                    return Err(source.error(
                        pointer.span(),
                        field("id_pointer"),
                        "give either id_header or id_pointer, not both",
                    ));
                }
                (Some(h), None) => Some(EventIdSource::Header(header_name(source, field("id_header"), h)?)),
                (None, Some(pointer)) => {
                    let text = pointer.get_ref();
                    if !text.starts_with('/') {
                        return Err(source.error(
                            pointer.span(),
                            field("id_pointer"),
                            format!("`{text}` is not a JSON pointer into the body (such as `/id`)"),
                        ));
                    }
                    Some(EventIdSource::Pointer(text.clone()))
                }
                (None, None) => None,
            };
            WebhookProfile::Token(TokenAuth { header, event_id })
        }
        other => {
            return Err(source.error(
                raw.profile.span(),
                field("profile"),
                format!("`{other}` is not a profile (meta, standard, generic or token)"),
            ));
        }
    };

    // Keys another profile would ignore are refused, so a setting never looks active when it
    // is not.
    let token = matches!(profile, WebhookProfile::Token(_));
    let foreign: [(&str, Option<Range<usize>>, bool); 7] = [
        ("verify_token", raw.verify_token.as_ref().map(Spanned::span), matches!(profile, WebhookProfile::Meta { .. })),
        (
            "header",
            raw.header.as_ref().map(Spanned::span),
            matches!(profile, WebhookProfile::Generic(_) | WebhookProfile::Token(_)),
        ),
        ("prefix", raw.prefix.as_ref().map(Spanned::span), matches!(profile, WebhookProfile::Generic(_))),
        ("encoding", raw.encoding.as_ref().map(Spanned::span), matches!(profile, WebhookProfile::Generic(_))),
        (
            "timestamp_header",
            raw.timestamp_header.as_ref().map(Spanned::span),
            matches!(profile, WebhookProfile::Generic(_)),
        ),
        ("id_header", raw.id_header.as_ref().map(Spanned::span), token),
        ("id_pointer", raw.id_pointer.as_ref().map(Spanned::span), token),
    ];
    for (key, span, applies) in foreign {
        if let (Some(span), false) = (span, applies) {
            return Err(source.error(span, field(key), format!("does not apply to the {} profile", profile.name())));
        }
    }

    let tolerance = match &raw.tolerance {
        None => DEFAULT_TOLERANCE,
        Some(t) => {
            let value = parse_duration(t.get_ref()).map_err(|e| source.error(t.span(), field("tolerance"), e))?;
            if !(MIN_TOLERANCE..=MAX_TOLERANCE).contains(&value) {
                return Err(source.error(t.span(), field("tolerance"), "must be between 1s and 24h"));
            }
            value
        }
    };

    let allowed_ips = match &raw.allowed_ips {
        None => Vec::new(),
        Some(list) if list.get_ref().is_empty() => {
            return Err(source.error(
                list.span(),
                field("allowed_ips"),
                "an empty list would refuse every delivery; remove the key to allow any address",
            ));
        }
        Some(list) => list
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let text = entry.get_ref().trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| {
                        source.error(
                            entry.span(),
                            format!("{}[{i}]", field("allowed_ips")),
                            format!("`{text}` is not an IP address or CIDR"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
    };

    let rate_limit = raw
        .rate_limit
        .as_ref()
        .map(|r| {
            platform::rate::RateLimit::parse(r.get_ref()).map_err(|e| source.error(r.span(), field("rate_limit"), e))
        })
        .transpose()?;
    let schema = payload_schema(source, source_name, raw)?;
    let delivery = delivery::build(
        source,
        source_name,
        RawDelivery {
            ordering_key: raw.ordering_key.as_ref(),
            concurrency: raw.concurrency.as_ref(),
            retry: raw.retry.as_ref(),
            envelope: raw.envelope.as_ref(),
            delivery_secrets: raw.delivery_secrets.as_ref(),
            ca_file: raw.ca_file.as_ref(),
            https: upstream.as_ref().is_some_and(Upstream::is_https),
            upstream: upstream.is_some(),
            publish: raw.publish.as_ref(),
            table: table.span(),
            meta: matches!(profile, WebhookProfile::Meta { .. }),
        },
    )?;
    Ok(Webhook {
        source: source_name.to_owned(),
        profile,
        secrets,
        upstream,
        tolerance,
        allowed_ips,
        rate_limit,
        schema,
        delivery,
        line: source.position(name.span().start).0,
    })
}

/// `schema` and `on_schema_failure`: the schema read and compiled now, so a file that cannot
/// be read, is not JSON, is not a valid JSON Schema 2020-12 or refers outside itself stops the
/// start-up naming `webhooks.<source>.schema`.
fn payload_schema(
    source: &Source<'_>,
    source_name: &str,
    raw: &RawWebhook,
) -> Result<Option<PayloadSchema>, RoutesError> {
    let field = |key: &str| format!("webhooks.{source_name}.{key}");
    let on_failure = match &raw.on_schema_failure {
        None => OnSchemaFailure::default(),
        Some(value) => OnSchemaFailure::parse(value.get_ref().trim()).ok_or_else(|| {
            source.error(
                value.span(),
                field("on_schema_failure"),
                format!("`{}` is not reject or dead_letter", value.get_ref()),
            )
        })?,
    };
    let Some(schema) = &raw.schema else {
        return match &raw.on_schema_failure {
            Some(value) => Err(source.error(value.span(), field("on_schema_failure"), "applies only with a `schema`")),
            None => Ok(None),
        };
    };
    let origin = schema.get_ref().trim();
    if origin.is_empty() {
        return Err(source.error(
            schema.span(),
            field("schema"),
            "must name a JSON Schema 2020-12 file or a built-in schema (builtin:whatsapp)",
        ));
    }
    PayloadSchema::load(origin, on_failure).map(Some).map_err(|e| source.error(schema.span(), field("schema"), e))
}
