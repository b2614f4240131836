//! The routes file named by `GATEWAY_CONFIG` (SPEC §6): `[[routes]]` with their upstream and
//! policy, and `[webhooks.<source>]`, parsed into typed structs and validated at start-up with
//! errors that name the line. The table that picks a request's route is `crate::routing`.

mod delivery;
mod webhook;

use std::{
    collections::BTreeMap,
    fmt,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

pub use delivery::{Delivery, Envelope, KeyPart, OrderingKey};
use platform::duration::parse_duration;
use serde::Deserialize;
use toml::Spanned;
pub use webhook::{EventIdSource, GenericSignature, SignatureEncoding, TokenAuth, Webhook, WebhookProfile};

use crate::{
    domain::{CredentialKind, CredentialKinds, RateLimit, Role, RouteAuth, Scope, Upstream, parse_byte_size},
    routing::{BUILT_IN_PREFIXES, RouteTable, is_under},
};

/// The group whose routes need a user access token or a PAT.
pub const USER_PREFIX: &str = "/v1/user";
/// The group whose routes need an SDK token.
pub const SDK_PREFIX: &str = "/v1/sdk";

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Retrying is opt-in per route: even an idempotent method can be expensive to repeat.
pub const DEFAULT_RETRIES: u32 = 0;
pub const MAX_RETRIES: u32 = 5;
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;
pub const MAX_BODY: u64 = 1 << 30;
const MAX_PREFIX_LEN: usize = 256;

/// One `[[routes]]` entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    /// Public path prefix, kept when forwarding.
    pub prefix: String,
    pub upstream: Upstream,
    pub auth: RouteAuth,
    /// All required.
    pub scopes: Vec<Scope>,
    /// Any one required; empty means no role is demanded.
    pub roles: Vec<Role>,
    /// Per tenant, or per IP when unauthenticated; `None` leaves only a tenant's own limit.
    pub rate_limit: Option<RateLimit>,
    /// Per attempt.
    pub timeout: Duration,
    /// Extra attempts, for idempotent methods only.
    pub retries: u32,
    /// Largest accepted request body, in bytes.
    pub max_body: u64,
    /// Whether the caller's `Authorization`, `X-API-Key` and `pc_*` cookies reach the upstream
    /// (off by default: the signed context says who the caller is).
    pub forward_credentials: bool,
    /// Whether `Upgrade: websocket` requests are passed through (off by default).
    pub websocket: bool,
    /// Where the route was declared, so logs and errors can point at it.
    pub line: usize,
}

/// The whole routes file. Without a file ([`RoutesFile::default`]) the gateway serves only its
/// built-in routes.
#[derive(Debug, Clone, Default)]
pub struct RoutesFile {
    pub routes: RouteTable,
    /// By source name, the `{source}` of `/v1/webhooks/{source}`.
    pub webhooks: BTreeMap<String, Webhook>,
}

impl RoutesFile {
    /// Reads and validates the file at `path`; errors carry the path.
    pub fn load(path: &Path) -> Result<Self, RoutesError> {
        let text = std::fs::read_to_string(path).map_err(|e| RoutesError {
            file: Some(path.to_owned()),
            line: None,
            column: None,
            field: None,
            message: format!("cannot be read: {e}"),
        })?;
        Self::parse(&text).map_err(|e| RoutesError { file: Some(path.to_owned()), ..e })
    }

    /// Parses and validates the text of a routes file.
    pub fn parse(text: &str) -> Result<Self, RoutesError> {
        let source = Source { text };
        let raw: RawFile = toml::from_str(text).map_err(|e| source.toml_error(&e))?;

        let mut routes = RouteTable::default();
        for (index, raw_route) in raw.routes.iter().enumerate() {
            let route = build_route(&source, index, raw_route)?;
            if let Some(first) = routes.get(&route.prefix) {
                return Err(source.error(
                    raw_route.get_ref().prefix.span(),
                    format!("routes[{index}].prefix"),
                    format!("`{}` is already routed on line {}", route.prefix, first.line),
                ));
            }
            routes.push(route);
        }

        let mut webhooks = BTreeMap::new();
        for (name, raw_webhook) in &raw.webhooks {
            let hook = webhook::build(&source, name, raw_webhook)?;
            webhooks.insert(hook.source.clone(), hook);
        }
        Ok(Self { routes, webhooks })
    }
}

/// A routes file that cannot be used, with the line (and column) it went wrong on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RoutesError {
    pub file: Option<PathBuf>,
    /// 1-based.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    /// The TOML path of the offending value (`routes[2].prefix`), or its key for syntax errors.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for RoutesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "line {line}, column {column}: ")?,
            (Some(line), None) => write!(f, "line {line}: ")?,
            _ => {}
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The file's text, to turn byte offsets from `toml`'s spans into lines and columns.
struct Source<'a> {
    text: &'a str,
}

impl Source<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let mut end = offset.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &self.text[..end];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
    }

    fn error(&self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) -> RoutesError {
        let (line, column) = self.position(span.start);
        RoutesError {
            file: None,
            line: Some(line),
            column: Some(column),
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A syntax or shape error from `toml`. Its message rarely names the key (`invalid value:
    /// integer -1, expected u32`), so the key written on that line is added; never the value,
    /// which may be a secret.
    fn toml_error(&self, err: &toml::de::Error) -> RoutesError {
        let message = redact_strings(err.message().trim());
        match err.span() {
            Some(span) => {
                let (line, column) = self.position(span.start);
                RoutesError {
                    file: None,
                    line: Some(line),
                    column: Some(column),
                    field: self.key_on_line(line),
                    message,
                }
            }
            None => RoutesError { file: None, line: None, column: None, field: None, message },
        }
    }

    /// The table header or the bare key at the start of a line, if the line has one.
    fn key_on_line(&self, line: usize) -> Option<String> {
        let text = self.text.lines().nth(line.checked_sub(1)?)?;
        let text = text.split('#').next().unwrap_or_default().trim();
        let key = if text.starts_with('[') { text } else { text.split_once('=')?.0.trim() };
        let plausible = !key.is_empty()
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']' | ' '));
        plausible.then(|| key.to_owned())
    }
}

/// Replaces the quoted value in serde's `invalid type: string "…"` with `a string`: the value
/// may be a secret written with the wrong shape (`secrets = "…"` instead of a list).
fn redact_strings(message: &str) -> String {
    const MARKER: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(MARKER) {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let quoted = &rest[at + MARKER.len()..];
        let mut escaped = false;
        let mut end = quoted.len();
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &quoted[end..];
    }
    out.push_str(rest);
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    webhooks: BTreeMap<Spanned<String>, Spanned<webhook::RawWebhook>>,
}

type SpannedList = Spanned<Vec<Spanned<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Spanned<String>,
    upstream: Spanned<String>,
    auth: Option<SpannedList>,
    scopes: Option<SpannedList>,
    roles: Option<SpannedList>,
    rate_limit: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retries: Option<Spanned<u32>>,
    max_body: Option<Spanned<String>>,
    forward_credentials: Option<bool>,
    websocket: Option<bool>,
}

/// Checks a route prefix's shape, saying why it is refused.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix == "/v1" || prefix == "/v1/" {
        return Err("must name a path beneath /v1/, e.g. /v1/user/orders".to_owned());
    }
    if !prefix.starts_with("/v1/") {
        return Err(format!("`{prefix}` must start with /v1/ (e.g. /v1/user/orders)"));
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return Err(format!("must be at most {MAX_PREFIX_LEN} bytes"));
    }
    if prefix.contains(['?', '#']) {
        return Err(format!("`{prefix}` must not contain a query or fragment: routes match on the path only"));
    }
    if prefix.ends_with('*') {
        return Err(format!("`{prefix}` must not end with `*`: a prefix already matches every path beneath it"));
    }
    if prefix.contains("..") {
        return Err(format!("`{prefix}` must not contain `..`"));
    }
    if prefix.ends_with('/') {
        return Err(format!("`{prefix}` must not end with `/`: prefixes match on whole segments"));
    }
    for segment in prefix.split('/').skip(1) {
        if segment.is_empty() {
            return Err(format!("`{prefix}` has an empty segment (`//`)"));
        }
        if segment == "." {
            return Err(format!("`{prefix}` must not contain `.` segments"));
        }
        // Only unreserved characters (RFC 3986 §2.3): the gateway decodes exactly these in
        // request paths and keeps everything else encoded, so a prefix holding any other
        // character could be reached under one spelling and missed under another.
        if let Some(bad) = segment.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
        {
            return Err(format!("`{prefix}` contains `{bad}`; use letters, digits and -._~ only"));
        }
    }
    if let Some(built_in) = BUILT_IN_PREFIXES.iter().find(|built_in| is_under(prefix, built_in)) {
        return Err(format!("`{prefix}` is under the built-in route {built_in}, which a config route may not replace"));
    }
    Ok(())
}

/// The group a prefix belongs to and the kinds that group allows (SPEC §6: `/v1/user` takes
/// user access tokens and PATs, `/v1/sdk` takes SDK tokens).
fn group_of(prefix: &str) -> Option<(&'static str, CredentialKinds)> {
    if is_under(prefix, USER_PREFIX) {
        Some((USER_PREFIX, [CredentialKind::User, CredentialKind::Pat].into_iter().collect()))
    } else if is_under(prefix, SDK_PREFIX) {
        Some((SDK_PREFIX, [CredentialKind::Sdk].into_iter().collect()))
    } else {
        None
    }
}

fn build_auth(
    source: &Source<'_>,
    index: usize,
    route: &Spanned<RawRoute>,
    prefix: &str,
) -> Result<RouteAuth, RoutesError> {
    let field = format!("routes[{index}].auth");
    let group = group_of(prefix);
    let Some(list) = &route.get_ref().auth else {
        return match group {
            Some((_, kinds)) => Ok(RouteAuth::Required(kinds)),
            None => Err(source.error(
                route.span(),
                field,
                "is required outside /v1/user and /v1/sdk (e.g. auth = [\"api_key\"] or auth = [\"none\"])",
            )),
        };
    };
    if list.get_ref().is_empty() {
        return Err(source.error(list.span(), field, "must list at least one of user, pat, sdk, api_key or none"));
    }
    let mut kinds = CredentialKinds::default();
    let mut none = None;
    for item in list.get_ref() {
        match item.get_ref().as_str() {
            "none" => none = Some(item.span()),
            text => match CredentialKind::parse(text) {
                Some(kind) => kinds.insert(kind),
                None => {
                    return Err(source.error(
                        item.span(),
                        field,
                        format!("`{text}` is not a credential kind (user, pat, sdk, api_key or none)"),
                    ));
                }
            },
        }
    }
    match (none, group) {
        (Some(_), _) if !kinds.is_empty() => Err(source.error(
            list.span(),
            field,
            "`none` cannot be combined with other kinds: a route is either public or needs a credential",
        )),
        (Some(span), Some((group, _))) => Err(source.error(
            span,
            field,
            format!("`none` is refused under {group}: every request there must carry a credential"),
        )),
        (Some(_), None) => Ok(RouteAuth::Public),
        (None, Some((group, allowed))) if !kinds.is_subset_of(allowed) => {
            let refused: CredentialKinds = kinds.iter().filter(|kind| !allowed.contains(*kind)).collect();
            Err(source.error(list.span(), field, format!("routes under {group} accept only {allowed}, not {refused}")))
        }
        (None, _) => Ok(RouteAuth::Required(kinds)),
    }
}

/// Parses each item of an optional list, dropping repeats and keeping file order.
fn parse_list<T: PartialEq>(
    source: &Source<'_>,
    field: &str,
    list: Option<&SpannedList>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, RoutesError> {
    let mut out = Vec::new();
    for (i, item) in list.map(|l| l.get_ref().as_slice()).unwrap_or_default().iter().enumerate() {
        let value = parse(item.get_ref()).map_err(|e| source.error(item.span(), format!("{field}[{i}]"), e))?;
        if !out.contains(&value) {
            out.push(value);
        }
    }
    Ok(out)
}

fn build_route(source: &Source<'_>, index: usize, route: &Spanned<RawRoute>) -> Result<RoutePolicy, RoutesError> {
    let raw = route.get_ref();
    let field = |name: &str| format!("routes[{index}].{name}");

    let prefix = raw.prefix.get_ref().clone();
    check_prefix(&prefix).map_err(|e| source.error(raw.prefix.span(), field("prefix"), e))?;
    let upstream =
        Upstream::parse(raw.upstream.get_ref()).map_err(|e| source.error(raw.upstream.span(), field("upstream"), e))?;
    let auth = build_auth(source, index, route, &prefix)?;

    let scopes =
        parse_list(source, &field("scopes"), raw.scopes.as_ref(), |s| Scope::parse(s).map_err(|e| e.to_string()))?;
    let roles = parse_list(source, &field("roles"), raw.roles.as_ref(), |r| Role::parse(r).map_err(|e| e.to_string()))?;
    if auth.is_public() {
        // A public request carries no credential, so it has neither scopes nor a role.
        for (name, list, demanded) in
            [("scopes", &raw.scopes, !scopes.is_empty()), ("roles", &raw.roles, !roles.is_empty())]
        {
            if let (Some(list), true) = (list, demanded) {
                return Err(source.error(
                    list.span(),
                    field(name),
                    format!("a public route (auth = [\"none\"]) cannot require {name}"),
                ));
            }
        }
    }

    let rate_limit = raw
        .rate_limit
        .as_ref()
        .map(|r| RateLimit::parse(r.get_ref()).map_err(|e| source.error(r.span(), field("rate_limit"), e)))
        .transpose()?;

    let timeout = match &raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => {
            let value = parse_duration(t.get_ref()).map_err(|e| source.error(t.span(), field("timeout"), e))?;
            if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&value) {
                return Err(source.error(t.span(), field("timeout"), "must be between 1ms and 5m"));
            }
            value
        }
    };

    let retries = match &raw.retries {
        None => DEFAULT_RETRIES,
        Some(r) if *r.get_ref() > MAX_RETRIES => {
            return Err(source.error(r.span(), field("retries"), format!("must be at most {MAX_RETRIES}")));
        }
        Some(r) => *r.get_ref(),
    };

    let max_body = match &raw.max_body {
        None => DEFAULT_MAX_BODY,
        Some(m) => {
            let value = parse_byte_size(m.get_ref()).map_err(|e| source.error(m.span(), field("max_body"), e))?;
            if value > MAX_BODY {
                return Err(source.error(m.span(), field("max_body"), "must be at most 1GiB"));
            }
            value
        }
    };

    Ok(RoutePolicy {
        prefix,
        upstream,
        auth,
        scopes,
        roles,
        rate_limit,
        timeout,
        retries,
        max_body,
        forward_credentials: raw.forward_credentials.unwrap_or(false),
        websocket: raw.websocket.unwrap_or(false),
        line: source.position(route.span().start).0,
    })
}

#[cfg(test)]
mod tests;
